"""The engine's input from what the informers cache, defined in one pass.

`build_state` is the definition: every object viewed without what the API server and
the status writer change on their own, validated, ordered by key; every EndpointSlice
grouped into the endpoints of its ModelInfer. The Kubernetes provider does not call it
on every change (at 10,000 routes one pass is ~0.5 s): `state_keeper.StateKeeper` keeps
the same result per object, and is tested against this.

EndpointSlices are matched to ModelInfers by the `kubernetes.io/service-name` label (the
Service is named after the ModelInfer, see `workloads`). An endpoint's port is the
slice's `http` port (where the pod really listens); an endpoint without `ready` counts as
ready, as the EndpointSlice API defines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from types import MappingProxyType

from controller.kubernetes.interface import Obj
from controller.kubernetes.resources import MODEL_INFER
from controller.provider import ProviderState
from routing_engine.api.errors import ManifestError
from routing_engine.api.loader import parse_document
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import BackendEndpoint

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SOURCE = "kubernetes"

Parsed = tuple[Resource | None, list[ManifestError]]
ServiceKey = tuple[str, str]  # (namespace, Service name): the ModelInfer of that name


def engine_view(doc: Obj) -> Obj:
    """The object without what the API server and the status writer change on their own
    (resourceVersion, managedFields, status): the engine compiles specs, and leaving
    these out makes a status write compare equal, so it publishes nothing."""
    meta = {k: v for k, v in (doc.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**{k: v for k, v in doc.items() if k != "status"}, "metadata": meta}


def canonical(view: Obj) -> str:
    """An engine view as text that is equal exactly when the views are."""
    return json.dumps(view, sort_keys=True, separators=(",", ":"))


def parse_view(view: Obj) -> Parsed:
    return parse_document(view, source=SOURCE, index=1)


def reread(doc: Obj, text: str | None) -> tuple[str, Parsed | None]:
    """An object read again: its engine view's text, and what it parses to, or None when
    the text is `text` (what the engine reads of it did not change, e.g. a status write:
    the caller keeps the very model it had)."""
    view = engine_view(doc)
    now = canonical(view)
    return now, (None if now == text else parse_view(view))


def parse_objects(raw: Iterable[Obj], cache: dict[str, Parsed] | None = None
                  ) -> tuple[list[Resource], list[ManifestError]]:
    """Validated models, ordered by key (deterministic engine input), and the errors.

    With `cache` (engine view as canonical JSON → parse result), an object whose spec,
    labels and annotations did not change comes back as the very same model object: the
    engine's caches recognise it by identity, and the snapshot comparison is cheap. The
    cache keeps only the objects of this call."""
    objects: list[Resource] = []
    errors: list[ManifestError] = []
    seen: dict[str, Parsed] = {}
    for doc in raw:
        view = engine_view(doc)
        text = canonical(view) if cache is not None else ""
        parsed = cache.get(text) if cache is not None else None
        if parsed is None:
            parsed = parse_view(view)
        seen[text] = parsed
        obj, problems = parsed
        if obj is not None:
            objects.append(obj)
        errors.extend(problems)
    if cache is not None:
        cache.clear()
        cache.update(seen)
    objects.sort(key=lambda o: o.key)
    return objects, errors


def service_of(slice_: Obj) -> ServiceKey | None:
    """The Service (so the ModelInfer) an EndpointSlice belongs to, by its label."""
    meta = slice_.get("metadata", {})
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return None if service is None else (meta.get("namespace") or "default", service)


def slice_endpoints(slice_: Obj) -> Iterator[BackendEndpoint]:
    ports = slice_.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == "http"), ports[0].get("port") if ports else None)
    for endpoint in slice_.get("endpoints") or ():
        ready = (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint.get("addresses") or ():
            yield BackendEndpoint(str(address), int(port) if port else None, ready is not False)


def merged_endpoints(slices: Iterable[Obj]) -> tuple[BackendEndpoint, ...]:
    """The endpoints of one ModelInfer's slices: sorted, de-duplicated across slices."""
    found = {e for s in slices for e in slice_endpoints(s)}
    return tuple(sorted(found, key=lambda e: (e.address, e.port or 0)))


def endpoints_from_slices(slices: Iterable[Obj], infers: Iterable[ObjectKey]
                          ) -> dict[ObjectKey, tuple[BackendEndpoint, ...]]:
    """ModelInfer key → its endpoints (every ModelInfer with a slice, even an empty one)."""
    known = {(k.namespace, k.name) for k in infers}
    grouped: dict[ServiceKey, list[Obj]] = {}
    for s in slices:
        service = service_of(s)
        if service is not None and service in known:
            grouped.setdefault(service, []).append(s)
    return {ObjectKey(MODEL_INFER.kind, *service): merged_endpoints(found)
            for service, found in sorted(grouped.items())}


def build_state(engine_objects: Iterable[Obj], slices: Iterable[Obj],
                cache: dict[str, Parsed] | None = None) -> ProviderState:
    objects, errors = parse_objects(engine_objects, cache)
    infers = [o.key for o in objects if o.KIND == MODEL_INFER.kind]
    return ProviderState(tuple(objects), MappingProxyType(endpoints_from_slices(slices, infers)), tuple(errors))
