"""Kubernetes Events on the objects, recorded by the leader's status writes against the
fake API: phase changes, Envoy rejecting and accepting the config, canary rollouts; a
repeat counts up the stored Event; `kubectl get events` sees them."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from controller.kubernetes.client import KubeClient
from controller.kubernetes.events import EventRecorder, EventSpec, status_events
from controller.kubernetes.resources import EVENT, MODEL_ROUTE, MODEL_SERVER
from controller.kubernetes.status_writer import StatusWriter
from routing_engine.world import ConditionView, ObjectStatus
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import route, server
from tests.kubernetes.test_kubectl import kubectl

T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
ACCEPTED = ConditionView("Accepted", "True", "Accepted")
NO_INFER = ConditionView("ResolvedRefs", "False", "ModelNotFound",
                         "ModelServer default/s: spec.modelInferRef: ModelInfer default/i not found")
REJECTED = ConditionView("Programmed", "False", "ValidationFailed",
                         "Envoy rejected the configuration: listener/8080: invalid regex")
PROGRAMMED = ConditionView("Programmed", "True", "Programmed", "Envoy accepted the configuration")


def events(fake: FakeKubeApi) -> list[tuple[str, str, str, int]]:
    return [(e["type"], e["reason"], e["message"], e["count"])
            for e in sorted(fake.items(EVENT), key=lambda e: e["metadata"]["resourceVersion"])]


@pytest.fixture
def writer(api: KubeClient) -> StatusWriter:
    return StatusWriter(api, clock=lambda: T0, events=EventRecorder(api, instance="cp-0", clock=lambda: T0))


async def test_phase_changes_become_events_on_the_object(writer: StatusWriter, fake_api: FakeKubeApi) -> None:
    created = fake_api.seed(server("s", infer="i"))
    await writer.write(MODEL_SERVER, "default", "s", ObjectStatus("Failed", (ACCEPTED, NO_INFER)))
    await writer.write(MODEL_SERVER, "default", "s", ObjectStatus("Failed", (ACCEPTED, NO_INFER)))  # no change
    await writer.write(MODEL_SERVER, "default", "s", ObjectStatus("Ready", (ACCEPTED, PROGRAMMED)))
    assert events(fake_api) == [
        ("Warning", "ModelNotFound", NO_INFER.message, 1),
        ("Normal", "Ready", "phase Failed → Ready", 1)]
    (first, _) = sorted(fake_api.items(EVENT), key=lambda e: e["metadata"]["resourceVersion"])
    assert first["involvedObject"] == {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer",
                                       "name": "s", "namespace": "default", "uid": created["metadata"]["uid"],
                                       "resourceVersion": created["metadata"]["resourceVersion"]}
    assert first["metadata"]["namespace"] == "default" and first["metadata"]["name"].startswith("s.")
    assert (first["source"], first["reportingInstance"]) == ({"component": "modelroute"}, "cp-0")
    assert first["firstTimestamp"] == first["lastTimestamp"] == "2026-03-01T12:00:00Z"


async def test_a_nack_is_one_warning_with_envoys_message_and_recovery_is_announced(
        writer: StatusWriter, fake_api: FakeKubeApi) -> None:
    fake_api.seed(route("r"))
    await writer.write(MODEL_ROUTE, "default", "r", ObjectStatus("Active", (ACCEPTED, PROGRAMMED)))
    await writer.write(MODEL_ROUTE, "default", "r", ObjectStatus("Failed", (ACCEPTED, REJECTED)))
    await writer.write(MODEL_ROUTE, "default", "r", ObjectStatus("Active", (ACCEPTED, PROGRAMMED)))
    assert events(fake_api) == [
        ("Normal", "Active", "phase none → Active", 1),
        ("Warning", "ConfigRejected", REJECTED.message, 1),
        ("Normal", "Programmed", PROGRAMMED.message, 1),
        ("Normal", "Active", "phase Failed → Active", 1)]


def canary(phase: str, stable: int, canary_weight: int, **more: Any) -> dict[str, Any]:
    return {"canary": {"phase": phase, "stableWeight": stable, "canaryWeight": canary_weight, **more}}


async def test_rollout_steps_become_events(writer: StatusWriter, fake_api: FakeKubeApi) -> None:
    fake_api.seed(route("r"))
    active = ObjectStatus("Active", (ACCEPTED,))
    for extra in (canary("Progressing", 90, 10), canary("Progressing", 80, 20, lastSuccessRate=99.5),
                  canary("Paused", 80, 20, message="paused by modelroute rollout pause"),
                  canary("Progressing", 80, 20), canary("RolledBack", 100, 0, message="2 failed intervals")):
        await writer.write(MODEL_ROUTE, "default", "r", active, extra=extra)
    assert events(fake_api)[1:] == [
        ("Normal", "CanaryStarted", "rollout progressing at stable 90% / canary 10%", 1),
        ("Normal", "CanaryWeightChanged",
         "stable 90% / canary 10% → stable 80% / canary 20% (canary success rate 99.5%)", 1),
        ("Normal", "CanaryPaused", "rollout paused at stable 80% / canary 20%: paused by modelroute rollout pause", 1),
        ("Normal", "CanaryResumed", "rollout progressing at stable 80% / canary 20%", 1),
        ("Warning", "CanaryRolledBack", "canary rolled back: stable 100% / canary 0%: 2 failed intervals", 1)]
    promoted = status_events({"canary": canary("Progressing", 10, 90)["canary"]}, canary("Promoted", 0, 100))
    assert promoted == [EventSpec("Normal", "CanaryPromoted", "canary promoted: stable 0% / canary 100%")]


async def test_a_repeat_counts_up_the_stored_event(api: KubeClient, fake_api: FakeKubeApi) -> None:
    obj = fake_api.seed(route("r"))
    seconds = [0.0]
    recorder = EventRecorder(api, instance="cp-0", clock=lambda: T0, monotonic=lambda: seconds[0], series_s=600)
    rejected = EventSpec("Warning", "ConfigRejected", "Envoy rejected the configuration: bad")
    await recorder.record(obj, rejected)
    seconds[0] = 599.0
    await recorder.record(obj, rejected)
    assert events(fake_api) == [("Warning", "ConfigRejected", rejected.message, 2)]
    seconds[0] = 601.0
    await recorder.record(obj, rejected)  # the series is older than series_s: a new Event
    assert [e[3] for e in events(fake_api)] == [2, 1]
    current = next(e for e in fake_api.items(EVENT) if e["count"] == 1)
    fake_api.remove(EVENT, "default", current["metadata"]["name"])  # expired meanwhile
    await recorder.record(obj, rejected)
    assert len(fake_api.items(EVENT)) == 2 and recorder.emitted == 4


async def test_an_event_the_server_refuses_never_fails_the_status_write(
        api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.seed(server("s", infer="i"))
    recorder = EventRecorder(api, instance="cp-0")
    long_reason = EventSpec("Normal", "R" * 200, "too long a reason")  # the server refuses it (422)
    await recorder.record(fake_api.read(MODEL_SERVER, "default", "s"), long_reason)  # type: ignore[arg-type]
    assert fake_api.items(EVENT) == [] and recorder.emitted == 0


@pytest.mark.slow
async def test_kubectl_sees_the_events_of_an_object(writer: StatusWriter, fake_api: FakeKubeApi, tmp_path: Path) -> None:
    fake_api.seed(server("s", infer="i"))
    await writer.write(MODEL_SERVER, "default", "s", ObjectStatus("Failed", (ACCEPTED, NO_INFER)))
    out = await kubectl(fake_api.url, tmp_path, "get", "events", "-n", "default",
                        "--field-selector", "involvedObject.kind=ModelServer,involvedObject.name=s",
                        "-o", "jsonpath={range .items[*]}{.type} {.reason}: {.message}{end}")
    assert out == f"Warning ModelNotFound: {NO_INFER.message}"
