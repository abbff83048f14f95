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
- EndpointSlices are watched with a selector on `workload.matrixinfer.ai/modelinfer`,
  which the EndpointSlice controller copies from the Service, so the controller never
  caches every slice of the cluster (how a slice becomes endpoints: `state`).
- A change costs what changed: the informers' events name the objects to read again
  (`state_keeper`), so an edit at 10,000 routes does not re-read the other 29,999
  objects on the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial

from controller.kubernetes.informer import CacheKey, Change, Informer, cache_key
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import ENDPOINT_SLICE, ENGINE_KINDS, SECRET
from controller.kubernetes.secrets import ReferencedSecrets
from controller.kubernetes.state_keeper import StateKeeper
from controller.kubernetes.workloads import INFER_LABEL
from controller.provider import ProviderState, Publish
from kit.collector import gc_paused
from kit.tasks import cancel_and_wait, spawn

log = logging.getLogger(__name__)


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
            kind: Informer(api, rtype, partial(self._changed, kind), **options)  # type: ignore[arg-type]
            for kind, rtype in ENGINE_KINDS.items() if rtype != SECRET}
        self.slices = Informer(api, ENDPOINT_SLICE, partial(self._changed, ENDPOINT_SLICE.kind),
                               label_selector=INFER_LABEL, **options)  # type: ignore[arg-type]
        self.secrets = ReferencedSecrets(api, partial(self._changed, None), watch_timeout=watch_timeout)
        self.last: ProviderState | None = None
        self._keeper = StateKeeper()

    async def _changed(self, kind: str | None, change: Change) -> None:
        """`kind`: the informer's (None for Secrets, which the keeper compares whole)."""
        if change.type != "RESYNC":
            if kind is not None:
                self._keeper.changed(kind, cache_key(change.object))
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            self._dirty.set()

    def _caches(self) -> dict[str, Mapping[CacheKey, Obj]]:
        return {**{kind: informer.cache for kind, informer in self.informers.items()},
                ENDPOINT_SLICE.kind: self.slices.cache}

    def refresh(self) -> None:
        """Read what changed since the last read.

        The first read validates a whole cluster's worth of objects (30,000 at 10,000
        routes), which all live on: it runs with the collector paused (`kit.collector`),
        and what it made is frozen before the collector comes back, as the control loop's
        first compile is. Else the collector's first pass after it scans them all, and the
        start took 6.2 s to the world in the control loop instead of 4.0 (a throwaway
        measurement). Cyclic garbage made before, if any, is never collected: once."""
        if self.last is not None:
            self._keeper.refresh(self._caches())
            return
        with gc_paused():
            self._keeper.refresh(self._caches())
            gc.freeze()

    def state(self) -> ProviderState:
        """The caches as the engine's input now."""
        self.refresh()
        return self._keeper.state(self._caches(), self.secrets.objects())

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
        while True:
            self._dirty.clear()
            since, self._dirty_since = self._dirty_since, None
            self.refresh()
            await self.secrets.want(self._keeper.secret_refs())
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
