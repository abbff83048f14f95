"""An HTTP fake of the Kubernetes API server, faithful where controllers get it wrong.

Why not `kmock`: kmock 0.8's emulator serves CRUD and discovery, but its lists carry
`resourceVersion: "..."`, watches replay every object instead of resuming from a
resourceVersion, there is no 410 Gone, no 409 on a stale resourceVersion (only on a
duplicate create) and no status subresource (an update merges everything). Those are
exactly the behaviours the informer, reconciler and status writer must survive, so this
small fake implements them:

- CRUD on namespaced resources by group/version/plural, one global resourceVersion
  counter, uid/creationTimestamp/generation as the API server sets them;
- list (`metadata.resourceVersion`) and watch streams (`?watch=1&resourceVersion=N`,
  ADDED/MODIFIED/DELETED/BOOKMARK lines, `timeoutSeconds`, label selectors);
- 410 Gone (an ERROR event, as the real server sends it) for resourceVersions older than
  the last `compact()`;
- 409 Conflict for a write carrying a stale resourceVersion, and AlreadyExists;
- the status subresource: main-resource writes keep `status`, `/status` writes change
  only `status`; generation counts spec changes only;
- owner references stored as given, and background garbage collection of dependents;
- discovery (/api, /apis, /apis/<g>/<v>, /version) so the real `kubectl` can apply;
- field selectors (`metadata.name`, `metadata.namespace`, and the few per-kind fields the
  real server knows, e.g. a Secret's `type` or an Event's `involvedObject.*`); any other
  field is a 400, as on the real server;
- Events validated as the real server does for what matters to a recorder: the
  involved object's namespace is the Event's, reason and message have length limits;
- admission webhooks called like kube-apiserver calls them, honouring `failurePolicy`,
  `caBundle` and `timeoutSeconds` (`fake_admission`); `resolve` says where a Service's
  port is served.

It runs in the test's event loop on 127.0.0.1 and an ephemeral port. Tests reach its
state directly (`seed`, `read`, `before` hooks) to set up races deterministically.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controller.kubernetes.resources import ALL, EVENT, SERVICE, ResourceType
from tests.kubernetes.fake_admission import Admission, Refused, Resolve

Obj = dict[str, Any]
_FOREVER = 3600.0


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (kubectl's strategic merge patch is treated the same:
    close enough for the maps this project writes)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class ApiFailure(Exception):
    """Raised by the fake (or a test hook) to answer with a Kubernetes Status error."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.body = _status(code, reason, message)
        self.code = code


def _matches_labels(obj: Obj, selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in selector.split(","):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif labels.get(term) is None:
            return False
    return True


# Field selectors the real API server supports beyond metadata.name/namespace, by kind.
_FIELDS: dict[str, tuple[str, ...]] = {
    "Secret": ("type",),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
              "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
              "reportingComponent", "source", "type"),
    "Pod": ("spec.nodeName", "status.phase"),
}


def _field_terms(rtype: ResourceType, selector: str | None) -> list[tuple[str, bool, str]]:
    """(field, equal?, value) per term; ApiFailure 400 for a field the server does not know."""
    terms = []
    for term in (selector or "").split(","):
        if not term:
            continue
        negated = "!=" in term
        name, value = term.split("!=" if negated else ("==" if "==" in term else "="), 1)
        if name not in ("metadata.name", "metadata.namespace", *_FIELDS.get(rtype.kind, ())):
            raise ApiFailure(400, "BadRequest", f'"{name}" is not a known field selector: only "metadata.name", '
                                                f'"metadata.namespace"')
        terms.append((name, not negated, value))
    return terms


def _field_value(obj: Obj, name: str) -> str:
    value: Any = obj
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if name == "source" and isinstance(value, dict):
        value = value.get("component")
    return "" if value is None else str(value)


def _matches_fields(obj: Obj, terms: list[tuple[str, bool, str]]) -> bool:
    return all((_field_value(obj, name) == value) == equal for name, equal, value in terms)


@dataclass(eq=False)
class _Watch:
    rtype: ResourceType
    namespace: str | None
    selector: str | None
    bookmarks: bool
    fields: list[tuple[str, bool, str]] = field(default_factory=list)
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)

    def wants(self, rtype: ResourceType, obj: Obj) -> bool:
        return (rtype == self.rtype
                and (self.namespace is None or obj["metadata"].get("namespace") == self.namespace)
                and _matches_labels(obj, self.selector) and _matches_fields(obj, self.fields))


@dataclass
class _Hook:
    method: str
    rtype: ResourceType
    subresource: str | None
    call: Callable[[], None]


class FakeKubeApi:
    def __init__(self, resources: Iterable[ResourceType] = ALL, *, history: int | None = None,
                 resolve: Resolve | None = None) -> None:
        """`history`: keep only the last N events, like etcd compaction (None: keep all,
        compact only on `compact()`). `resolve(namespace, service, port)`: where a
        Service's port is served, for calling admission webhooks."""
        self.types = {(r.group, r.version, r.plural): r for r in resources}
        self._store: dict[ResourceType, dict[tuple[str, str], Obj]] = {r: {} for r in self.types.values()}
        # Like a real cluster, history starts well above 0 ("0" means "any version").
        self._rv = itertools.count(101)
        self._last_rv = 100
        self._log: list[tuple[int, ResourceType, Obj]] = []  # (rv, type, event)
        self._compacted = 0
        self._history = history
        self._watches: set[_Watch] = set()
        self._hooks: list[_Hook] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.authorizations: set[str] = set()  # Authorization headers seen
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.admission = Admission(self._of_type, self._service_exists, resolve)
        self._forbidden: set[tuple[ResourceType, str | None]] = set()

    # --- lifecycle ------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- direct access for tests --------------------------------------------------------

    def seed(self, obj: Obj) -> Obj:
        """Create `obj` as if POSTed (status kept: tests seed observed state too)."""
        rtype = self.type_of(obj)
        ns = obj.get("metadata", {}).get("namespace", "default")
        return self._create(rtype, ns, copy.deepcopy(obj), keep_status=True)

    def read(self, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
        obj = self._store[rtype].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def items(self, rtype: ResourceType) -> list[Obj]:
        return [copy.deepcopy(o) for _, o in sorted(self._store[rtype].items())]

    def write(self, rtype: ResourceType, namespace: str, name: str, mutate: Callable[[Obj], None]) -> Obj:
        """Change a stored object in place (status included), as another writer would."""
        obj = copy.deepcopy(self._store[rtype][(namespace, name)])
        mutate(obj)
        return self._commit(rtype, obj, "MODIFIED")

    def remove(self, rtype: ResourceType, namespace: str, name: str) -> None:
        self._delete(rtype, namespace, name)

    def forbid(self, rtype: ResourceType, namespace: str | None = None) -> None:
        """Answer 403 to every request on `rtype` in `namespace` (None: everywhere), as RBAC
        does for a service account without that permission."""
        self._forbidden.add((rtype, namespace))

    def compact(self) -> None:
        """Forget the event history: watches from any older resourceVersion get 410 Gone."""
        self._compacted = self._last_rv
        self._log.clear()

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to every watch that allows them."""
        for w in self._watches:
            if w.bookmarks:
                w.queue.put_nowait({"type": "BOOKMARK", "object": {
                    "kind": w.rtype.kind, "apiVersion": w.rtype.api_version,
                    "metadata": {"resourceVersion": str(self._last_rv)}}})

    def close_watches(self) -> None:
        """End every open watch stream, as the API server does at its timeout."""
        for w in self._watches:
            w.queue.put_nowait(None)

    @property
    def resource_version(self) -> str:
        return str(self._last_rv)

    @property
    def watch_count(self) -> int:
        return len(self._watches)

    def before(self, method: str, rtype: ResourceType, call: Callable[[], None], *,
               subresource: str | None = None) -> None:
        """Run `call` once, just before the next `method` request on `rtype` is handled."""
        self._hooks.append(_Hook(method.upper(), rtype, subresource, call))

    def _of_type(self, rtype: ResourceType) -> list[Obj]:
        return self.items(rtype) if rtype in self._store else []

    def _service_exists(self, namespace: str, name: str) -> bool:
        return SERVICE in self._store and (namespace, name) in self._store[SERVICE]

    def type_of(self, obj: Obj) -> ResourceType:
        for r in self.types.values():
            if r.api_version == obj.get("apiVersion") and r.kind == obj.get("kind"):
                return r
        raise KeyError(f"{obj.get('apiVersion')}/{obj.get('kind')} is not served")

    # --- storage ----------------------------------------------------------------------

    def _commit(self, rtype: ResourceType, obj: Obj, event_type: str) -> Obj:
        rv = next(self._rv)
        self._last_rv = rv
        obj["metadata"]["resourceVersion"] = str(rv)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if event_type == "DELETED":
            self._store[rtype].pop(key, None)
        else:
            self._store[rtype][key] = obj
        event = {"type": event_type, "object": copy.deepcopy(obj)}
        self._log.append((rv, rtype, event))
        if self._history is not None and len(self._log) > self._history:
            dropped = self._log.pop(0)
            self._compacted = dropped[0]
        for w in self._watches:
            if w.wants(rtype, obj):
                w.queue.put_nowait(event)
        return copy.deepcopy(obj)

    def _create(self, rtype: ResourceType, namespace: str, body: Obj, *, keep_status: bool = False) -> Obj:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiFailure(422, "Invalid", "metadata.name: Required value")
        if rtype.namespaced:
            meta["namespace"] = namespace
        if (meta.get("namespace", ""), name) in self._store[rtype]:
            raise ApiFailure(409, "AlreadyExists", f'{rtype.plural} "{name}" already exists')
        meta.pop("resourceVersion", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = "2026-01-01T00:00:00Z"
        meta["generation"] = 1
        if rtype.status_subresource and not keep_status:
            body.pop("status", None)
        if rtype == EVENT:
            _validate_event(body)
        return self._commit(rtype, body, "ADDED")

    def _current(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._store[rtype].get((namespace if rtype.namespaced else "", name))
        if obj is None:
            raise ApiFailure(404, "NotFound", f'{rtype.plural}.{rtype.group} "{name}" not found')
        return obj

    def _update(self, rtype: ResourceType, namespace: str, name: str, body: Obj, subresource: str | None) -> Obj:
        current = self._current(rtype, namespace, name)
        sent_rv = (body.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiFailure(409, "Conflict", f'Operation cannot be fulfilled on {rtype.plural}.{rtype.group} '
                                            f'"{name}": the object has been modified; please apply your '
                                            "changes to the latest version and try again")
        new = copy.deepcopy(current)
        if subresource == "status":
            new["status"] = copy.deepcopy(body.get("status"))
        else:
            meta = body.get("metadata") or {}
            for k in ("labels", "annotations", "ownerReferences", "finalizers"):
                if k in meta:
                    new["metadata"][k] = copy.deepcopy(meta[k])
                else:
                    new["metadata"].pop(k, None)
            for k in set(new) - {"metadata", "apiVersion", "kind", "status"}:
                new.pop(k)
            for k, v in body.items():
                if k not in ("metadata", "apiVersion", "kind", "status"):
                    new[k] = copy.deepcopy(v)
            if not rtype.status_subresource:
                if "status" in body:
                    new["status"] = copy.deepcopy(body["status"])
            spec_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
            if spec_of(new) != spec_of(current):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if new == current:
            return copy.deepcopy(current)  # a no-op write does not bump resourceVersion
        return self._commit(rtype, new, "MODIFIED")

    def _delete(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        current = copy.deepcopy(self._current(rtype, namespace, name))
        gone = self._commit(rtype, current, "DELETED")
        uid = current["metadata"].get("uid")
        if rtype.kind == "Namespace":  # namespace deletion takes its contents along
            for other in self.types.values():
                for (ns, n) in [k for k in self._store[other] if k[0] == name and other.namespaced]:
                    if (ns, n) in self._store[other]:
                        self._delete(other, ns, n)
        for other in self.types.values():  # background garbage collection of dependents
            for (ns, n), obj in list(self._store[other].items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs) and (ns, n) in self._store[other]:
                    self._delete(other, ns, n)
        return gone

    # --- HTTP -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if "Authorization" in request.headers:
            self.authorizations.add(request.headers["Authorization"])
        try:
            parts = [p for p in request.path.split("/") if p]
            discovery = self._discovery(parts)
            if discovery is not None:
                return web.json_response(discovery)
            rtype, namespace, name, sub = self._parse(parts)
            if (rtype, None) in self._forbidden or (rtype, namespace) in self._forbidden:
                where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
                raise ApiFailure(403, "Forbidden", f'{rtype.plural} is forbidden: User "system:serviceaccount:'
                                                   f'matrixinfer-system:modelroute" cannot {request.method.lower()} '
                                                   f'resource "{rtype.plural}"{where}')
            for hook in self._hooks:  # one hook per request: several hooks = several requests
                if hook.method == request.method and hook.rtype == rtype and hook.subresource == sub:
                    self._hooks.remove(hook)
                    hook.call()
                    break
            return await self._serve(request, rtype, namespace, name, sub)
        except ApiFailure as failure:
            return web.json_response(failure.body, status=failure.code)

    def _parse(self, parts: list[str]) -> tuple[ResourceType, str | None, str | None, str | None]:
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        rtype = self.types.get((group, version, rest[0]))
        if rtype is None:
            raise ApiFailure(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub not in (None, "status"):
            raise ApiFailure(404, "NotFound", f"subresource {sub} is not served")
        if sub == "status" and not rtype.status_subresource:
            raise ApiFailure(404, "NotFound", f"{rtype.plural} has no status subresource")
        return rtype, namespace, name, sub

    async def _serve(self, request: web.Request, rtype: ResourceType, namespace: str | None,
                     name: str | None, sub: str | None) -> web.StreamResponse:
        method, q = request.method, request.query
        if name is None:
            if method == "GET" and q.get("watch") in ("1", "true"):
                return await self._watch(request, rtype, namespace)
            if method == "GET":
                fields = _field_terms(rtype, q.get("fieldSelector"))
                items = [copy.deepcopy(o) for (ns, _), o in sorted(self._store[rtype].items())
                         if (namespace is None or ns == namespace) and _matches_labels(o, q.get("labelSelector"))
                         and _matches_fields(o, fields)]
                return web.json_response({"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version,
                                          "metadata": {"resourceVersion": str(self._last_rv)}, "items": items})
            if method == "POST":
                body = await request.json()
                if rtype.namespaced:
                    body.setdefault("metadata", {})["namespace"] = namespace or "default"
                body = await self._admit(rtype, None, "CREATE", body, None)
                return web.json_response(self._create(rtype, namespace or "default", body), status=201)
            raise ApiFailure(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        ns = namespace or ""
        if method == "GET":
            return web.json_response(copy.deepcopy(self._current(rtype, ns, name)))
        if method == "PUT":
            body = await request.json()
            body = await self._admit(rtype, sub, "UPDATE", body, self._current(rtype, ns, name))
            return web.json_response(self._update(rtype, ns, name, body, sub))
        if method == "PATCH":
            ctype = request.content_type
            if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                raise ApiFailure(415, "UnsupportedMediaType", f"patch type {ctype} is not supported")
            patch = await request.json()
            current = self._current(rtype, ns, name)
            merged = merge_patch(copy.deepcopy(current), patch)
            sent_rv = (patch.get("metadata") or {}).get("resourceVersion")
            merged.setdefault("metadata", {})["resourceVersion"] = sent_rv or current["metadata"]["resourceVersion"]
            merged = await self._admit(rtype, sub, "UPDATE", merged, current)
            return web.json_response(self._update(rtype, ns, name, merged, sub))
        if method == "DELETE":
            return web.json_response(self._delete(rtype, ns, name))
        raise ApiFailure(405, "MethodNotAllowed", f"{method} is not supported")

    async def _admit(self, rtype: ResourceType, sub: str | None, operation: str, obj: Obj, old: Obj | None) -> Obj:
        try:
            return await self.admission.admit(rtype, sub, operation, obj, copy.deepcopy(old) if old else None)
        except Refused as refused:
            raise ApiFailure(refused.code, refused.reason, refused.message) from refused

    async def _watch(self, request: web.Request, rtype: ResourceType, namespace: str | None) -> web.StreamResponse:
        q = request.query
        w = _Watch(rtype, namespace, q.get("labelSelector"), q.get("allowWatchBookmarks") in ("1", "true"),
                   _field_terms(rtype, q.get("fieldSelector")))
        since = q.get("resourceVersion", "")
        if since in ("", "0"):  # no resourceVersion: synthetic ADDED for what exists now
            for obj in self._store[rtype].values():
                if w.wants(rtype, obj):
                    w.queue.put_nowait({"type": "ADDED", "object": copy.deepcopy(obj)})
        elif int(since) < self._compacted:
            w.queue.put_nowait({"type": "ERROR", "object": _status(
                410, "Expired", f"too old resource version: {since} ({self._compacted})")})
            w.queue.put_nowait(None)
        else:
            for rv, t, event in self._log:
                if rv > int(since) and w.wants(t, event["object"]):
                    w.queue.put_nowait(event)
        self._watches.add(w)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        timeout = float(q.get("timeoutSeconds", _FOREVER))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await response.prepare(request)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(w.queue.get(), remaining)
                except TimeoutError:
                    break
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watches.discard(w)
        return response

    # --- discovery --------------------------------------------------------------------

    def _discovery(self, parts: list[str]) -> Obj | None:
        if parts == ["version"]:
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "platform": "linux/amd64"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g) for g in self._groups()]}
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in self._groups():
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1])}
        if parts == ["api", "v1"]:
            return self._resource_list("", "v1")
        if len(parts) == 3 and parts[0] == "apis" and any(
                (parts[1], parts[2]) == (r.group, r.version) for r in self.types.values()):
            return self._resource_list(parts[1], parts[2])
        return None

    def _groups(self) -> list[str]:
        return sorted({r.group for r in self.types.values() if r.group})

    def _group(self, group: str) -> Obj:
        versions = sorted({r.version for r in self.types.values() if r.group == group})
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def _resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for r in self.types.values():
            if (r.group, r.version) != (group, version):
                continue
            resources.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                              "kind": r.kind, "shortNames": list(r.short_names),
                              "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            if r.status_subresource:
                resources.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                                  "kind": r.kind, "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def _validate_event(event: Obj) -> None:
    """What the real server refuses of a core/v1 Event that a recorder could get wrong."""
    involved = event.get("involvedObject") or {}
    namespace = event["metadata"].get("namespace", "")
    problems = []
    if not involved.get("kind") or not involved.get("name"):
        problems.append("involvedObject: Required value: kind and name")
    if involved.get("namespace", "") != namespace and not (not involved.get("namespace") and namespace == "default"):
        problems.append(f"involvedObject.namespace: Invalid value: \"{involved.get('namespace', '')}\": "
                        "does not match event.namespace")
    if len(str(event.get("reason", ""))) > 128:
        problems.append("reason: Too long: may not be more than 128 bytes")
    if len(str(event.get("message", "")).encode()) > 4096:
        problems.append("message: Too long: may not be more than 4096 bytes")
    if event.get("type") not in (None, "", "Normal", "Warning"):
        problems.append(f"type: Unsupported value: \"{event.get('type')}\": supported values: \"Normal\", \"Warning\"")
    if problems:
        raise ApiFailure(422, "Invalid", f'Event "{event["metadata"].get("name", "")}" is invalid: ' + ", ".join(problems))


def main() -> None:
    """`python -m tests.kubernetes.fakeapi [PORT]`: serve the fake until interrupted, for
    trying kubectl or the real-cluster suite against it (see deploy/README.md)."""
    import sys

    async def serve() -> None:
        server = FakeKubeApi()
        url = await server.start(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
        print(f"fake Kubernetes API on {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
