"""Leader election on a Lease in the fake API, with a fake clock: one leader, takeover
only after a full lease duration of silence, exactly one winner of a race, step-down,
release on shutdown."""

from __future__ import annotations

import asyncio
import datetime

from controller.kubernetes.client import KubeClient
from controller.kubernetes.leader import LeaderElector
from controller.kubernetes.resources import LEASE
from tests.kubernetes.fakeapi import ApiFailure, FakeKubeApi
from tests.kubernetes.helpers import eventually, running


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def elector(api: KubeClient, identity: str, clock: Clock, **kw: object) -> LeaderElector:
    return LeaderElector(api, namespace="matrixinfer-system", name="modelroute", identity=identity,
                         lease_duration=15, renew_deadline=10, retry_period=2, clock=clock, **kw)  # type: ignore[arg-type]


def holder(fake_api: FakeKubeApi) -> str | None:
    lease = fake_api.read(LEASE, "matrixinfer-system", "modelroute")
    return lease["spec"].get("holderIdentity") if lease else None


async def test_one_leader_and_takeover_after_a_silent_lease_duration(api: KubeClient, fake_api: FakeKubeApi) -> None:
    clock = Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(10)
    assert await a.try_acquire_or_renew()  # a renews: b's view of the record restarts
    clock.advance(10)
    assert not await b.try_acquire_or_renew()
    clock.advance(14)  # a silent for 14s < 15s
    assert not await b.try_acquire_or_renew()
    clock.advance(2)
    assert await b.try_acquire_or_renew()
    lease = fake_api.read(LEASE, "matrixinfer-system", "modelroute")["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()


async def test_racing_takeover_has_exactly_one_winner(api: KubeClient, fake_api: FakeKubeApi) -> None:
    clock = Clock()
    old, b = elector(api, "old", clock), elector(api, "b", clock)
    assert await old.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(16)
    # Replica c's takeover lands between b's read and b's write of the expired Lease.
    fake_api.before("PUT", LEASE, lambda: fake_api.write(
        LEASE, "matrixinfer-system", "modelroute", lambda o: o["spec"].update(holderIdentity="c")))
    assert not await b.try_acquire_or_renew()
    assert holder(fake_api) == "c"
    assert [m for m, p in fake_api.requests if p.endswith("/leases/modelroute")].count("PUT") == 1


async def test_run_leads_steps_down_and_releases(api: KubeClient, fake_api: FakeKubeApi) -> None:
    clock = Clock()
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def tick_sleep(_seconds: float) -> None:
        await ticks.get()

    led: list[str] = []

    async def lead() -> None:
        led.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            led.append("stopped")

    a = elector(api, "a", clock, sleep=tick_sleep)
    async with running(a.run(lead)):
        await eventually(lambda: led == ["started"] and a.is_leader, what="leadership")
        # Another replica takes the Lease over (say a's renewals were lost): a steps down.
        fake_api.write(LEASE, "matrixinfer-system", "modelroute",
                       lambda o: o["spec"].update(holderIdentity="b", renewTime="2026-03-01T00:00:30.000000Z"))
        ticks.put_nowait(None)
        await eventually(lambda: led == ["started", "stopped"] and not a.is_leader, what="step-down")
        # b goes silent for a whole lease duration: a leads again.
        clock.advance(16)
        ticks.put_nowait(None)
        await eventually(lambda: led == ["started", "stopped", "started"], what="leading again")
    # Cancelled while leading: the Lease is released for a quick successor.
    assert holder(fake_api) == ""
    assert led[-1] == "stopped"


async def test_failed_renewals_are_tolerated_only_until_the_renew_deadline(api: KubeClient,
                                                                           fake_api: FakeKubeApi) -> None:
    clock = Clock()
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def tick_sleep(_seconds: float) -> None:
        await ticks.get()

    def api_down() -> None:
        raise ApiFailure(503, "ServiceUnavailable", "apiserver restarting")

    a = elector(api, "a", clock, sleep=tick_sleep)
    async with running(a.run(lambda: asyncio.Event().wait())):
        await eventually(lambda: a.is_leader, what="leadership")
        rounds = len(fake_api.requests)
        fake_api.before("GET", LEASE, api_down)
        clock.advance(5)
        ticks.put_nowait(None)
        await eventually(lambda: len(fake_api.requests) > rounds, what="a failed renewal")
        await asyncio.sleep(0.05)
        assert a.is_leader  # 5s without a renewal < renew deadline (10s)
        fake_api.before("GET", LEASE, api_down)
        clock.advance(6)
        ticks.put_nowait(None)
        await eventually(lambda: not a.is_leader, what="step-down after the renew deadline")
