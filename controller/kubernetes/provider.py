"""The Kubernetes provider: what is in the cluster, as the engine's input.

One informer per kind (ModelServer, ModelRoute, ModelInfer, Model, AutoscalingPolicy)
plus EndpointSlices of the ModelInfer Services, plus the Secrets ModelServers reference
and no others (`secrets`). Whenever something changed, the caches are turned into a
`ProviderState` (`controller.provider`: validated objects, endpoints per ModelInfer, and
the validation errors of objects that were left out) and handed to `publish`.

- Nothing is published before every informer has listed once: a half-listed cluster
  would look like deleted routes and drop live traffic. Before each publish, the Secrets
  of the current references have been listed once (or failed to), so a TLS server is
  never published as "Secret not found" only because its Secret was not read yet.
- Changes that arrive while `publish` runs are coalesced into the next snapshot (the
  first change after a quiet period goes out at once); an unchanged snapshot (resync,
  bookmarks, a status-only write) is not published again.
- An invalid object is reported in the state's `errors` and left out; every other object
  is still published (SPEC 3.5).
- `on_lag` (metrics) is told, at each publish, how long ago the first change it carries
  arrived from a watch (the informer lag the user sees: watch → engine).
- EndpointSlices are matched to ModelInfers by the `kubernetes.io/service-name` label
  (the Service is named after the ModelInfer, see `workloads`); they are watched with a
  selector on `workload.matrixinfer.ai/modelinfer`, which the EndpointSlice controller
  copies from the Service, so the controller never caches every slice of the cluster.
  An endpoint's port is the slice's `http` port (where the pod really listens); an
  endpoint without `ready` counts as ready, as the EndpointSlice API defines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from types import MappingProxyType

from controller.kubernetes.informer import Change, Informer
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import ENDPOINT_SLICE, ENGINE_KINDS, MODEL_INFER, MODEL_SERVER, SECRET
from controller.kubernetes.secrets import ReferencedSecrets, secret_refs
from controller.kubernetes.workloads import INFER_LABEL
from controller.provider import ProviderState, Publish
from kit.tasks import cancel_and_wait, spawn
from routing_engine.api.errors import ManifestError
from routing_engine.api.loader import parse_document
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import BackendEndpoint

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SOURCE = "kubernetes"


def engine_view(doc: Obj) -> Obj:
    """The object without what the API server and the status writer change on their own
    (resourceVersion, managedFields, status): the engine compiles specs, and leaving
    these out makes a status write compare equal, so it publishes nothing."""
    meta = {k: v for k, v in (doc.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    return {**{k: v for k, v in doc.items() if k != "status"}, "metadata": meta}


Parsed = tuple[Resource | None, list[ManifestError]]


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
        text = json.dumps(view, sort_keys=True, separators=(",", ":")) if cache is not None else ""
        parsed = cache.get(text) if cache is not None else None
        if parsed is None:
            parsed = parse_document(view, source=SOURCE, index=1)
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


def endpoints_from_slices(slices: Iterable[Obj], infers: Iterable[ObjectKey]
                          ) -> dict[ObjectKey, tuple[BackendEndpoint, ...]]:
    """ModelInfer key → its endpoints (sorted, de-duplicated across slices)."""
    known = {(k.namespace, k.name) for k in infers}
    found: dict[ObjectKey, set[BackendEndpoint]] = {}
    for s in slices:
        meta = s.get("metadata", {})
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        namespace = meta.get("namespace") or "default"
        if service is None or (namespace, service) not in known:
            continue
        ports = s.get("ports") or []
        port = next((p.get("port") for p in ports if p.get("name") == "http"),
                    ports[0].get("port") if ports else None)
        key = ObjectKey(MODEL_INFER.kind, namespace, service)
        bucket = found.setdefault(key, set())
        for endpoint in s.get("endpoints") or ():
            ready = (endpoint.get("conditions") or {}).get("ready")
            for address in endpoint.get("addresses") or ():
                bucket.add(BackendEndpoint(str(address), int(port) if port else None, ready is not False))
    return {k: tuple(sorted(v, key=lambda e: (e.address, e.port or 0))) for k, v in sorted(found.items())}


def build_state(engine_objects: Iterable[Obj], slices: Iterable[Obj],
                cache: dict[str, Parsed] | None = None) -> ProviderState:
    objects, errors = parse_objects(engine_objects, cache)
    infers = [o.key for o in objects if o.KIND == MODEL_INFER.kind]
    return ProviderState(tuple(objects), MappingProxyType(endpoints_from_slices(slices, infers)), tuple(errors))


class KubernetesProvider:
    """A `Provider` (`start(publish)`/`close()`); `run(publish)` is the same until cancelled."""

    def __init__(self, api: KubeApi, *, namespace: str | None = None,
                 resync_period: float | None = 600.0, watch_timeout: int = 300,
                 on_lag: Callable[[float], None] | None = None) -> None:
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._dirty_since: float | None = None  # arrival of the first change not published yet
        self._on_lag = on_lag
        options = dict(namespace=namespace, resync_period=resync_period, watch_timeout=watch_timeout)
        self.informers: dict[str, Informer] = {
            kind: Informer(api, rtype, self._changed, **options)  # type: ignore[arg-type]
            for kind, rtype in ENGINE_KINDS.items() if rtype != SECRET}
        self.slices = Informer(api, ENDPOINT_SLICE, self._changed, label_selector=INFER_LABEL,
                               **options)  # type: ignore[arg-type]
        self.secrets = ReferencedSecrets(api, self._changed, watch_timeout=watch_timeout)
        self.last: ProviderState | None = None
        self._parsed: dict[str, Parsed] = {}

    async def _changed(self, change: Change) -> None:
        if change.type != "RESYNC":
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            self._dirty.set()

    def state(self) -> ProviderState:
        engine_objects = [o for inf in self.informers.values() for o in inf.cache.values()]
        engine_objects += self.secrets.objects()
        return build_state(engine_objects, self.slices.cache.values(), self._parsed)

    async def start(self, publish: Publish) -> None:
        """Watch in the background: the first state once every informer listed."""
        self._task = spawn(self.run(publish), name="kubernetes provider")

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    async def run(self, publish: Publish) -> None:
        """Watch and publish until cancelled."""
        everything = [*self.informers.values(), self.slices]
        try:
            async with asyncio.TaskGroup() as group:
                for informer in everything:
                    group.create_task(informer.run(), name=f"informer {informer.rtype}")
                await asyncio.gather(*(i.synced.wait() for i in everything))
                await self._publish_changes(publish)
        finally:
            await self.secrets.close()

    async def _publish_changes(self, publish: Publish) -> None:
        servers = self.informers[MODEL_SERVER.kind]
        while True:
            self._dirty.clear()
            since, self._dirty_since = self._dirty_since, None
            await self.secrets.want(secret_refs(servers.cache.values()))
            await self.secrets.settled()
            state = self.state()
            if state != self.last:
                for error in state.errors:
                    log.warning("invalid object left out", extra={"error": str(error)})
                await publish(state)
                self.last = state
                if since is not None and self._on_lag is not None:
                    self._on_lag(time.monotonic() - since)
            await self._dirty.wait()
