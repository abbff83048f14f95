"""Status writes against the fake API: written only on change, transition times kept,
observedGeneration, other writers' fields untouched, conflicts re-read and retried."""

from __future__ import annotations

import datetime

import pytest

from controller.kubernetes.client import KubeClient
from controller.kubernetes.errors import Conflict
from controller.kubernetes.resources import MODEL_ROUTE
from controller.kubernetes.status_writer import StatusWriter
from routing_engine.world import ConditionView, ObjectStatus
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import route

T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def active(message: str = "2 routes", accepted: str = "True") -> ObjectStatus:
    return ObjectStatus("Active", (ConditionView("Accepted", accepted, "Accepted", message),
                                   ConditionView("ResolvedRefs", "True", "ResolvedRefs", "")), active_routes=2)


def status_patches(fake_api: FakeKubeApi) -> int:
    return sum(1 for m, p in fake_api.requests if m == "PATCH" and p.endswith("/status"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_first_write_sets_times_and_observed_generation(api: KubeClient, fake_api: FakeKubeApi,
                                                              clock: Clock) -> None:
    fake_api.seed(route("r1"))
    writer = StatusWriter(api, clock=clock)
    assert await writer.write(MODEL_ROUTE, "default", "r1", active())
    status = fake_api.read(MODEL_ROUTE, "default", "r1")["status"]
    assert status["phase"] == "Active" and status["activeRoutes"] == 2 and status["observedGeneration"] == 1
    assert status["conditions"][0] == {"type": "Accepted", "status": "True", "reason": "Accepted",
                                       "message": "2 routes", "lastTransitionTime": "2026-03-01T12:00:00Z",
                                       "observedGeneration": 1}


async def test_unchanged_status_is_not_written(api: KubeClient, fake_api: FakeKubeApi, clock: Clock) -> None:
    fake_api.seed(route("r1"))
    writer = StatusWriter(api, clock=clock)
    await writer.write(MODEL_ROUTE, "default", "r1", active())
    version = fake_api.read(MODEL_ROUTE, "default", "r1")["metadata"]["resourceVersion"]
    clock.advance(60)
    assert not await writer.write(MODEL_ROUTE, "default", "r1", active())
    assert status_patches(fake_api) == 1 and writer.writes == 1
    assert fake_api.read(MODEL_ROUTE, "default", "r1")["metadata"]["resourceVersion"] == version


async def test_transition_time_moves_only_when_status_changes(api: KubeClient, fake_api: FakeKubeApi,
                                                              clock: Clock) -> None:
    fake_api.seed(route("r1"))
    writer = StatusWriter(api, clock=clock)
    await writer.write(MODEL_ROUTE, "default", "r1", active())
    clock.advance(60)
    assert await writer.write(MODEL_ROUTE, "default", "r1", active(message="3 routes"))
    accepted = fake_api.read(MODEL_ROUTE, "default", "r1")["status"]["conditions"][0]
    assert accepted["message"] == "3 routes" and accepted["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    clock.advance(60)
    assert await writer.write(MODEL_ROUTE, "default", "r1", active(accepted="False"))
    conditions = fake_api.read(MODEL_ROUTE, "default", "r1")["status"]["conditions"]
    assert conditions[0]["lastTransitionTime"] == "2026-03-01T12:02:00Z"
    assert conditions[1]["lastTransitionTime"] == "2026-03-01T12:00:00Z"


async def test_spec_change_updates_observed_generation(api: KubeClient, fake_api: FakeKubeApi, clock: Clock) -> None:
    fake_api.seed(route("r1"))
    writer = StatusWriter(api, clock=clock)
    await writer.write(MODEL_ROUTE, "default", "r1", active())
    await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/new"}})
    assert await writer.write(MODEL_ROUTE, "default", "r1", active())
    assert fake_api.read(MODEL_ROUTE, "default", "r1")["status"]["observedGeneration"] == 2


async def test_conflict_rereads_and_keeps_the_other_writers_fields(api: KubeClient, fake_api: FakeKubeApi,
                                                                    clock: Clock) -> None:
    fake_api.seed(route("r1"))
    stale = await api.get(MODEL_ROUTE, "default", "r1")
    # Between our read and our write, the canary controller writes its part of the status.
    fake_api.before("PATCH", MODEL_ROUTE, lambda: fake_api.write(
        MODEL_ROUTE, "default", "r1", lambda o: o.setdefault("status", {}).update(canary={"canaryWeight": 20})),
        subresource="status")
    writer = StatusWriter(api, clock=clock)
    assert await writer.write(MODEL_ROUTE, "default", "r1", active(), current=stale)
    status = fake_api.read(MODEL_ROUTE, "default", "r1")["status"]
    assert status["canary"] == {"canaryWeight": 20} and status["phase"] == "Active"
    assert status_patches(fake_api) == 2 and writer.writes == 1


async def test_persistent_conflicts_give_up_with_a_conflict(api: KubeClient, fake_api: FakeKubeApi,
                                                            clock: Clock) -> None:
    fake_api.seed(route("r1"))
    for i in range(3):
        fake_api.before("PATCH", MODEL_ROUTE, lambda i=i: fake_api.write(
            MODEL_ROUTE, "default", "r1", lambda o: o["metadata"].setdefault("labels", {}).update(n=str(i))),
            subresource="status")
    with pytest.raises(Conflict):
        await StatusWriter(api, clock=clock, attempts=3).write(MODEL_ROUTE, "default", "r1", active())


async def test_deleted_object_is_skipped(api: KubeClient, clock: Clock) -> None:
    assert not await StatusWriter(api, clock=clock).write(MODEL_ROUTE, "default", "gone", active())
