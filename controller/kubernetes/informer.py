"""List+watch of one resource type into a local cache, as client-go's informers do.

Why: a controller must see every change exactly once in order, survive the API server
ending watch streams (timeouts, restarts) and compacting its history, and not hammer it
when it is down. So:

- start with a list, remember its resourceVersion, then watch from it;
- every event (and BOOKMARK, which carries only a resourceVersion) advances it, so a
  watch that ends is resumed where it stopped, without a list;
- 410 Gone (history compacted) means events were missed: list again and hand the
  handler the difference between the old cache and the new list as ordinary events;
- any other failure backs off exponentially (the sleep is injectable for tests) and
  resumes from the last resourceVersion; so does a watch that ends without a single
  event (real servers send bookmarks, so only a misbehaving one does that);
- every `resync_period` the whole cache is handed to the handler again (RESYNC), so
  reconcilers re-converge state someone else changed behind their back.

The handler is awaited in order; if it raises, the error is logged and the informer goes
on: one bad object must not stop the stream for all the others. Others can `subscribe`
to a running informer (client-go's shared informers: one list and watch per kind in the
process): a subscriber is handed every cached object as ADDED, and each change after
the owner's handler, until it unsubscribes. With `keep`, objects it
refuses are neither cached nor handed on (one leaving the kept set looks DELETED): the
cache holds only what the caller may keep in memory, e.g. referenced Secrets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from controller.kubernetes.errors import ApiError, Gone
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import ResourceType
from kit.backoff import Backoff

log = logging.getLogger(__name__)

CacheKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
ChangeType = Literal["ADDED", "MODIFIED", "DELETED", "RESYNC"]


@dataclass(frozen=True, slots=True)
class Change:
    type: ChangeType
    object: Obj


Handler = Callable[[Change], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


def cache_key(obj: Obj) -> CacheKey:
    meta = obj.get("metadata", {})
    return (str(meta.get("namespace") or ""), str(meta["name"]))


class Informer:
    def __init__(self, api: KubeApi, rtype: ResourceType, handler: Handler | None = None, *,
                 namespace: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None, keep: Callable[[Obj], bool] | None = None,
                 resync_period: float | None = 600.0, watch_timeout: int = 300,
                 backoff: Backoff = Backoff(), sleep: Sleep = asyncio.sleep) -> None:
        self.rtype = rtype
        self._api = api
        self._handler = handler
        self._namespace = namespace
        self._selector = label_selector
        self._fields = field_selector
        self._keep = keep
        self._resync_period = resync_period
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self._sleep = sleep
        self._cache: dict[CacheKey, Obj] = {}
        self.resource_version = ""
        self.synced = asyncio.Event()  # set after the first successful list
        self.attempted = asyncio.Event()  # set after the first list, whether it worked or failed
        self.lists = 0  # how many lists were done (1 + re-lists after Gone)
        self.failures = 0  # consecutive failures, reset by any successful call
        self._subscribers: list[Handler] = []

    @property
    def cache(self) -> Mapping[CacheKey, Obj]:
        return MappingProxyType(self._cache)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._cache.get((namespace if self.rtype.namespaced else "", name))

    async def run(self) -> None:
        """Run until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._list_and_watch())
            if self._resync_period:
                group.create_task(self._resync_loop(self._resync_period))

    async def _list_and_watch(self) -> None:
        must_list = True
        while True:
            try:
                if must_list:
                    await self._list()
                    must_list = False
                events = 0
                async for event in self._api.watch(self.rtype, resource_version=self.resource_version,
                                                   namespace=self._namespace, label_selector=self._selector,
                                                   field_selector=self._fields,
                                                   timeout_seconds=self._watch_timeout):
                    self.failures = 0
                    events += 1
                    if event.type == "BOOKMARK":
                        self.resource_version = event.resource_version or self.resource_version
                        continue
                    key = cache_key(event.object)
                    self.resource_version = event.resource_version or self.resource_version
                    kind = event.type
                    if self._keep is not None and (kind == "DELETED" or not self._keep(event.object)):
                        if key not in self._cache:
                            continue  # never kept: nothing to tell
                        kind = "DELETED"
                    if kind == "DELETED":
                        self._cache.pop(key, None)
                    else:
                        self._cache[key] = event.object
                    await self._notify(Change(kind, event.object))
                if events == 0:  # a stream that ends at once, again and again, must not spin
                    self.failures += 1
                    await self._sleep(self._backoff.delay(self.failures))
            except Gone:
                log.info("watch expired, re-listing", extra={"resource": str(self.rtype)})
                must_list = True
            except (ApiError, ValueError, TimeoutError) as err:  # ValueError: a garbled stream line
                self.attempted.set()
                self.failures += 1
                delay = self._backoff.delay(self.failures)
                log.warning("list/watch failed; retrying", extra={
                    "resource": str(self.rtype), "error": str(err), "delay": delay})
                await self._sleep(delay)

    async def _list(self) -> None:
        listed = await self._api.list(self.rtype, namespace=self._namespace, label_selector=self._selector,
                                      field_selector=self._fields)
        self.failures = 0
        self.lists += 1
        old = self._cache
        new = {cache_key(o): o for o in listed.items if self._keep is None or self._keep(o)}
        self._cache = new
        self.resource_version = listed.resource_version
        for key, obj in old.items():
            if key not in new:
                await self._notify(Change("DELETED", obj))
        for key, obj in new.items():
            before = old.get(key)
            if before is None:
                await self._notify(Change("ADDED", obj))
            elif _version(before) != _version(obj):
                await self._notify(Change("MODIFIED", obj))
        self.synced.set()
        self.attempted.set()

    async def _resync_loop(self, period: float) -> None:
        await self.synced.wait()
        while True:
            await self._sleep(period)
            for obj in list(self._cache.values()):
                await self._notify(Change("RESYNC", obj))

    async def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Hand `handler` every cached object (ADDED), then every change; returns the
        call that stops it. Changes that arrive while the cache is handed over are handed
        on as they come, and each object is handed over as it is by then: a change may be
        seen twice, never missed (subscribers are level-triggered, as client-go's are). A
        handler that awaits may run for a live change while the hand-over waits on it."""
        self._subscribers.append(handler)
        try:
            for key in list(self._cache):
                obj = self._cache.get(key)
                if obj is not None:
                    await self._call(handler, Change("ADDED", obj))
        except BaseException:  # cancelled while handing over: not subscribed
            self._subscribers.remove(handler)
            raise
        return lambda: self._subscribers.remove(handler)

    async def _notify(self, change: Change) -> None:
        for handler in (self._handler, *self._subscribers):
            if handler is not None:
                await self._call(handler, change)

    async def _call(self, handler: Handler, change: Change) -> None:
        try:
            await handler(change)
        except Exception:  # noqa: BLE001 - a handler bug must not stop the informer
            log.exception("informer handler failed", extra={
                "resource": str(self.rtype), "object": "/".join(cache_key(change.object))})


def _version(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))
