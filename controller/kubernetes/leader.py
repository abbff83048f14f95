"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does,
so several control-plane replicas can run: all serve xDS, only the leader writes
(workloads, status).

- A replica holds the Lease while it renews `spec.renewTime` at least every
  `lease_duration`; others take it over only after they have seen the same record
  unchanged for a whole `lease_duration` on their *own* clock (remote timestamps are
  never compared with the local clock, so clock skew between nodes does not matter).
- Every write carries the resourceVersion it read: of two replicas taking over an expired
  Lease at once, exactly one succeeds; the other gets Conflict and stays a follower.
- A leader that cannot renew within `renew_deadline` steps down on its own (before anyone
  else may take over), cancelling the work it led.
- On shutdown the leader releases the Lease (empty holder), so a successor need not
  wait out the lease.
Clock and sleep are injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from controller.kubernetes.errors import AlreadyExists, ApiError, Conflict, NotFound
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import LEASE
from controller.kubernetes.status_writer import Clock, utc_now

log = logging.getLogger(__name__)

Sleep = Callable[[float], Coroutine[Any, Any, None]]


def micro_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: KubeApi, *, namespace: str, name: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Clock = utc_now, sleep: Sleep = asyncio.sleep) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self._api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self._duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry = retry_period
        self._clock = clock
        self._sleep = sleep
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime, transitions) last seen
        self._observed_at: datetime.datetime | None = None  # local time it was first seen
        self._last_renew: datetime.datetime | None = None
        self.is_leader = False

    def _seconds_since(self, moment: datetime.datetime) -> float:
        return (self._clock() - moment).total_seconds()

    def _lease(self, spec: Obj, base: Obj | None = None) -> Obj:
        obj: Obj = dict(base) if base else {"apiVersion": LEASE.api_version, "kind": LEASE.kind,
                                            "metadata": {"name": self.name, "namespace": self.namespace}}
        obj["spec"] = spec
        return obj

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        now = self._clock()
        mine = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self._duration),
                "renewTime": micro_time(now)}
        try:
            current = await self._api.get(LEASE, self.namespace, self.name)
        except NotFound:
            try:
                await self._api.create(LEASE, self._lease({**mine, "acquireTime": micro_time(now),
                                                           "leaseTransitions": 0}))
            except AlreadyExists:
                return False
            return self._won(now)
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if holder and holder != self.identity:
            assert self._observed_at is not None
            if self._seconds_since(self._observed_at) < float(spec.get("leaseDurationSeconds") or self._duration):
                return False  # someone else holds a live lease
        new_spec = dict(spec) | mine
        if holder != self.identity:
            new_spec["acquireTime"] = micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        try:
            await self._api.replace(LEASE, self._lease(new_spec, current))
        except Conflict:
            return False
        return self._won(now)

    def _won(self, now: datetime.datetime) -> bool:
        self._last_renew = now
        return True

    async def release(self) -> None:
        """Give the Lease up (only if still ours), so a successor takes over at once."""
        with contextlib.suppress(ApiError):
            current = await self._api.get(LEASE, self.namespace, self.name)
            spec = current.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                await self._api.replace(LEASE, self._lease(
                    {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}, current))

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign until cancelled; run `lead()` as a task while leading, cancel it when
        leadership is lost, and release the Lease when cancelled while leading."""
        task: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    ok = await self.try_acquire_or_renew()
                except ApiError as err:
                    log.warning("lease round failed", extra={"lease": f"{self.namespace}/{self.name}",
                                                             "error": str(err)})
                    ok = False
                taken = self._observed is not None and self._observed[0] not in ("", self.identity)
                if not ok and not taken and self.is_leader and self._last_renew is not None \
                        and self._seconds_since(self._last_renew) < self._renew_deadline:
                    ok = True  # a failed renew (API error) inside the deadline: still leading
                if ok and not self.is_leader:
                    log.info("became leader", extra={"lease": f"{self.namespace}/{self.name}",
                                                     "identity": self.identity})
                    self.is_leader = True
                    task = asyncio.create_task(lead(), name=f"leading {self.name}")
                elif not ok and self.is_leader:
                    log.warning("lost leadership", extra={"lease": f"{self.namespace}/{self.name}",
                                                          "identity": self.identity})
                    self.is_leader = False
                    await _cancel(task)
                    task = None
                if task is not None and task.done():  # the led work ended on its own: surface it
                    task.result()
                    task = None
                await self._sleep(self._retry)
        finally:
            await _cancel(task)
            if self.is_leader:
                self.is_leader = False
                await asyncio.shield(self.release())


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
