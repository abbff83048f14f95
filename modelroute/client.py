"""A typed Python client for MatrixInfer objects in a cluster: create, read, list, replace,
patch, delete and watch ModelServers, ModelRoutes, ModelInfers, Models and
AutoscalingPolicies (and Secrets) as the pydantic models of `routing_engine.api.resources`.

    import asyncio
    from modelroute.client import Client
    from routing_engine.api.resources import ModelRoute

    async def main() -> None:
        async with Client.from_kubeconfig(namespace="default") as client:
            route = await client.get(ModelRoute, "llama")
            print(route.spec.routes[0].weight)
            for r in await client.list(ModelRoute, all_namespaces=True):
                print(r.key, r.status)
            async for event in client.watch(ModelRoute):
                print(event.type, event.object.key)

    asyncio.run(main())

What is sent is what the object holds (`Resource.manifest()`): the fields that were set,
never the models' defaults, so an object read, changed with `model_copy` and written back
keeps the user's manifest as written (and every metadata field the API server added).
Objects the API server returns are validated by the same rules as `modelroute validate`;
one that breaks them raises `InvalidObject` naming the object, field path and rule.
`replace` is conditional on the object's `metadata.resourceVersion` (Conflict when someone
else changed it first: read again and retry). Errors are the typed ones of
`controller.kubernetes.errors` (NotFound, Conflict, AlreadyExists, Gone, ApiError).

`watch` lists first (an ADDED event per existing object, unless a `resource_version` is
given), then streams changes; when the API server ends the stream it resumes from the last
version seen, and when that version is too old (410 Gone) it lists again and reports what
changed meanwhile, so a watch never misses or repeats a change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from controller.kubernetes.client import KubeClient, context_namespace
from controller.kubernetes.errors import AlreadyExists, ApiError, Conflict, Gone, NotFound
from controller.kubernetes.interface import Obj
from controller.kubernetes.resources import ENGINE_KINDS, ResourceType
from routing_engine.api.errors import ManifestError
from routing_engine.api.loader import parse_document
from routing_engine.api.resources import DEFAULT_NAMESPACE, Resource

__all__ = ["AlreadyExists", "ApiError", "Client", "Conflict", "Event", "Gone", "InvalidObject", "NotFound"]

R = TypeVar("R", bound=Resource)
EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class InvalidObject(ValueError):
    """An object the API server returned that the models refuse (e.g. written before a
    rule existed, or past a CRD that was not updated). `errors` name field and rule."""

    def __init__(self, errors: list[ManifestError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Event(Generic[R]):
    """One change seen by `watch`: the object after it (before it, for DELETED)."""

    type: EventType
    object: R


def _rtype(kind: type[Resource]) -> ResourceType:
    try:
        return ENGINE_KINDS[kind.KIND]
    except KeyError:
        raise TypeError(f"{kind.__name__} is not a MatrixInfer kind the client serves") from None


def _model(kind: type[R], obj: Obj) -> R:
    parsed, errors = parse_document(obj, source="kubernetes", index=1)
    if errors or parsed is None:
        raise InvalidObject(errors)
    if not isinstance(parsed, kind):
        raise InvalidObject([ManifestError("kubernetes", 1, str(obj.get("kind")), None, None, "kind",
                                           f"expected {kind.KIND}")])
    return parsed


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or DEFAULT_NAMESPACE), str(meta.get("name"))


class Client:
    """Typed CRUD and watch against one API server; see the module docstring."""

    def __init__(self, api: KubeClient, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        """`namespace`: the one used when a call names none (kubectl's current namespace)."""
        self.api = api
        self.namespace = namespace

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None,
                        namespace: str | None = None) -> Client:
        """Credentials from `path` (default $KUBECONFIG, ~/.kube/config) or, in a pod, the
        service account. `namespace` defaults to the kubeconfig context's, else default.
        Raises `controller.kubernetes.errors.ConfigError` without usable credentials."""
        return cls(KubeClient.from_kubeconfig(path, context=context),
                   namespace=namespace or context_namespace(path, context))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.api.close()

    # --- reads ------------------------------------------------------------------------

    async def get(self, kind: type[R], name: str, namespace: str | None = None) -> R:
        return _model(kind, await self.api.get(_rtype(kind), namespace or self.namespace, name))

    async def list(self, kind: type[R], *, namespace: str | None = None, all_namespaces: bool = False,
                   label_selector: str | None = None) -> list[R]:
        """The objects of one namespace (default: the client's), or of all of them."""
        listed = await self.api.list(_rtype(kind), namespace=None if all_namespaces else namespace or self.namespace,
                                     label_selector=label_selector)
        return [_model(kind, item) for item in listed.items]

    # --- writes -----------------------------------------------------------------------

    async def create(self, obj: R) -> R:
        """Create `obj` in its own namespace; returns it as stored (uid, resourceVersion)."""
        return _model(type(obj), await self.api.create(_rtype(type(obj)), obj.manifest()))

    async def replace(self, obj: R) -> R:
        """Write `obj`'s spec (PUT), conditional on its resourceVersion when it has one."""
        return _model(type(obj), await self.api.replace(_rtype(type(obj)), obj.manifest()))

    async def patch(self, kind: type[R], name: str, patch: dict[str, Any], namespace: str | None = None) -> R:
        """A JSON merge patch in wire names (`{"spec": {"routes": [...]}}`; null deletes)."""
        return _model(kind, await self.api.patch(_rtype(kind), namespace or self.namespace, name, patch))

    async def delete(self, kind: type[Resource], name: str, namespace: str | None = None) -> None:
        await self.api.delete(_rtype(kind), namespace or self.namespace, name)

    # --- watch ------------------------------------------------------------------------

    async def watch(self, kind: type[R], *, namespace: str | None = None, all_namespaces: bool = False,
                    label_selector: str | None = None, resource_version: str | None = None,
                    timeout_seconds: int | None = None) -> AsyncIterator[Event[R]]:
        """Changes to the objects of one namespace (or all), forever, or until the API
        server's `timeout_seconds` ends one stream (then the iterator ends too)."""
        rtype = _rtype(kind)
        where = None if all_namespaces else namespace or self.namespace
        known: dict[tuple[str, str], Obj] = {}
        version = resource_version or ""  # none: list first
        while True:
            if not version:
                listed = await self.api.list(rtype, namespace=where, label_selector=label_selector)
                current = {_key(o): o for o in listed.items}
                for key, obj in current.items():
                    old = known.get(key)
                    if old is None or old != obj:
                        yield Event("ADDED" if old is None else "MODIFIED", _model(kind, obj))
                for key in [k for k in known if k not in current]:
                    yield Event("DELETED", _model(kind, known.pop(key)))
                known = current
                version = listed.resource_version
            events = 0
            try:
                async for event in self.api.watch(rtype, resource_version=version, namespace=where,
                                                  label_selector=label_selector, timeout_seconds=timeout_seconds):
                    events += 1
                    version = event.resource_version or version
                    if event.type == "BOOKMARK":
                        continue
                    if event.type == "DELETED":
                        known.pop(_key(event.object), None)
                    else:
                        known[_key(event.object)] = event.object
                    yield Event(event.type, _model(kind, event.object))
            except Gone:
                version = ""  # too old: list again, report the difference
                continue
            if timeout_seconds is not None:
                return
            if events == 0:  # a stream that ends at once, again and again, must not spin
                await asyncio.sleep(1.0)

