"""The embedded status file: content, change detection, transition times, atomicity, reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from controller.local.replicas import ReplicaStatus
from controller.local.status_view import (CanaryView, GroupView, RouteView, SplitView, StatusUnavailable,
                                    StatusFile, percentages, read_status, render_status, status_path)
from routing_engine.api.resources import ObjectKey
from routing_engine.world import ConditionView, ObjectStatus

SERVER = ObjectKey("ModelServer", "default", "llama-server")
ROUTE = ObjectKey("ModelRoute", "default", "chat")
INFER = ObjectKey("ModelInfer", "default", "llama-infer")


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> str:
        return f"2026-01-01T00:00:{self.t:02d}Z"


def server_status(ready: Literal["True", "False"] = "True", message: str = "") -> ObjectStatus:
    return ObjectStatus(phase="Ready" if ready == "True" else "Failed",
                        conditions=(ConditionView("Accepted", "True", "Accepted"),
                                    ConditionView("Ready", ready, "Ready" if ready == "True" else "ModelNotFound", message)),
                        service_endpoint="http://127.0.0.1:8080/v1/models/llama")


def route_view(canary_weight: int = 20) -> RouteView:
    return RouteView(ROUTE, "/v1/chat", (
        GroupView("headers x-user=beta", (SplitView("default/llama-b", 1),)),
        GroupView("*", (SplitView("default/llama-a", 100 - canary_weight, "stable"),
                        SplitView("default/llama-b", canary_weight, "canary")))),
        CanaryView(100 - canary_weight, canary_weight, "Progressing", 99.5))


def test_writes_objects_routes_replicas_and_errors(tmp_path: Path) -> None:
    writer = StatusFile(status_path(tmp_path), now=Clock())
    assert writer.write(statuses={SERVER: server_status(), INFER: ObjectStatus("Pending", ())}, routes=[route_view()],
                        replicas={INFER: ReplicaStatus(desired=2, ready=1, restarts=3)},
                        errors={"bad.yaml": ["bad.yaml#1: ModelRoute default/x: spec.routes: is required"]})
    doc = read_status(tmp_path)  # a run directory works as well as the file
    server, infer = doc["objects"][1], doc["objects"][0]
    assert server["serviceEndpoint"] == "http://127.0.0.1:8080/v1/models/llama" and server["phase"] == "Ready"
    assert [c["type"] for c in server["conditions"]] == ["Accepted", "Ready"]
    assert infer == {"kind": "ModelInfer", "namespace": "default", "name": "llama-infer", "phase": "Pending",
                     "replicas": 2, "readyReplicas": 1, "restarts": 3, "conditions": []}
    [route] = doc["routes"]
    assert route["groups"][1]["splits"] == [
        {"destination": "default/llama-a", "weight": 80, "percent": 80.0, "role": "stable"},
        {"destination": "default/llama-b", "weight": 20, "percent": 20.0, "role": "canary"}]
    assert route["canary"] == {"stableWeight": 80, "canaryWeight": 20, "phase": "Progressing", "lastSuccessRate": 99.5}
    assert doc["errors"] == {"bad.yaml": ["bad.yaml#1: ModelRoute default/x: spec.routes: is required"]}
    assert [p.name for p in status_path(tmp_path).parent.iterdir()] == ["status.json"]  # no temp files left


def test_unchanged_content_is_not_rewritten_and_transitions_keep_their_time(tmp_path: Path) -> None:
    clock = Clock()
    path = status_path(tmp_path)
    writer = StatusFile(path, now=clock)
    assert writer.write(statuses={SERVER: server_status()})
    clock.t = 5
    assert not writer.write(statuses={SERVER: server_status()})
    assert read_status(path)["updatedAt"] == "2026-01-01T00:00:00Z"
    clock.t = 9
    assert writer.write(statuses={SERVER: server_status("False", "ModelInfer default/gone not found")})
    conditions = {c["type"]: c for c in read_status(path)["objects"][0]["conditions"]}
    assert conditions["Accepted"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert conditions["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:09Z"
    # A new writer (modelroute up restarted) keeps the times of conditions that did not flip.
    clock.t = 30
    again = StatusFile(path, now=clock)
    again.write(statuses={SERVER: server_status("False", "ModelInfer default/gone not found")}, routes=[route_view()])
    conditions = {c["type"]: c for c in read_status(path)["objects"][0]["conditions"]}
    assert conditions["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:09Z"


def test_live_split_change_is_written(tmp_path: Path) -> None:
    writer = StatusFile(status_path(tmp_path), now=Clock())
    writer.write(statuses={}, routes=[route_view(20)])
    assert writer.write(statuses={}, routes=[route_view(30)])
    assert read_status(tmp_path)["routes"][0]["canary"]["canaryWeight"] == 30


def test_reader_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StatusUnavailable, match="is `modelroute up` running"):
        read_status(tmp_path)
    path = status_path(tmp_path)
    path.parent.mkdir(exist_ok=True)
    path.write_text("{half")
    with pytest.raises(StatusUnavailable, match="cannot be read"):
        read_status(path)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(StatusUnavailable, match="unknown format"):
        read_status(path)


def test_render_shows_endpoints_splits_problems_and_errors(tmp_path: Path) -> None:
    writer = StatusFile(status_path(tmp_path), now=Clock())
    writer.write(statuses={SERVER: server_status("False", "ModelInfer default/gone not found"),
                           INFER: ObjectStatus("Running", ())},
                 routes=[route_view()], replicas={INFER: ReplicaStatus(2, 2, 0)}, errors={"x.yaml": ["x.yaml: bad"]})
    text = render_status(read_status(tmp_path))
    assert "http://127.0.0.1:8080/v1/models/llama" in text
    assert "2/2 ready" in text
    assert "! Ready=False (ModelNotFound: ModelInfer default/gone not found)" in text
    assert "Accepted=" not in text  # healthy conditions are not noise
    assert "default/llama-a 80% (stable), default/llama-b 20% (canary)" in text
    assert "canary Progressing: 80/20, success 99.5%" in text
    assert "errors in x.yaml:" in text


def test_percentages_normalize_like_weighted_clusters() -> None:
    assert percentages([1, 1, 1]) == [33.3, 33.3, 33.3]
    assert percentages([3, 1]) == [75.0, 25.0]
    assert percentages([0, 0]) == [0.0, 0.0]
