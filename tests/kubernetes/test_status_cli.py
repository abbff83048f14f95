"""`modelroute status --kubernetes`: the cluster's status in the status tables, with the
canary group's live weights from status.canary."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from modelroute.cluster_status import document
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import model_infer, server

REPO = Path(__file__).resolve().parents[2]


def _route(status: dict | None = None) -> dict:
    obj = {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute",
           "metadata": {"name": "llama", "namespace": "default"},
           "spec": {"path": "/v1/models/llama", "routes": [
               {"match": {"headers": {"x-user": "beta"}}, "destination": {"modelServerRef": {"name": "v2"}}},
               {"destination": {"modelServerRef": {"name": "v1"}}},
               {"destination": {"modelServerRef": {"name": "v2"}}}],
               "canary": {"enabled": True, "trafficSplit": {"stable": 90, "canary": 10}}}}
    if status is not None:
        obj["status"] = status
    return obj


def test_splits_use_the_live_canary_weights_and_missing_weights_share_equally() -> None:
    live = {"phase": "Active", "conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed",
                                               "message": ""}],
            "canary": {"stableWeight": 60, "canaryWeight": 40, "phase": "Progressing", "lastSuccessRate": 99.5}}
    doc = document({"ModelRoute": [_route(live)]}, now="2026-01-01T00:00:00Z")
    (route,) = doc["routes"]
    pinned, canary = route["groups"]
    assert [s["percent"] for s in pinned["splits"]] == [100.0]
    assert [(s["destination"], s["weight"], s.get("role")) for s in canary["splits"]] == [
        ("default/v1", 60, "stable"), ("default/v2", 40, "canary")]
    assert route["canary"]["phase"] == "Progressing"
    (obj,) = doc["objects"]
    assert (obj["kind"], obj["phase"]) == ("ModelRoute", "Active")


def test_without_live_status_written_weights_rule() -> None:
    doc = document({"ModelRoute": [_route()]}, now="t")
    assert [s["weight"] for s in doc["routes"][0]["groups"][1]["splits"]] == [1, 1]
    assert doc["objects"][0]["phase"] == "?"


async def test_cli_reads_the_cluster(fake_api: FakeKubeApi, tmp_path: Path) -> None:
    fake_api.seed(model_infer("v1", model_name="m"))
    fake_api.seed({**server("v1", infer="v1", path="/v1/models/v1"),
                   "status": {"phase": "Ready", "serviceEndpoint": "http://gw:8080/v1/models/v1", "conditions": []}})
    fake_api.seed(_route({"phase": "Active", "conditions": [],
                          "canary": {"stableWeight": 70, "canaryWeight": 30, "phase": "Paused"}}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{fake_api.url}'}}}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: u}}]\nusers: [{name: u, user: {}}]\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelroute.cli", "status", "--kubernetes", "--kubeconfig", str(kubeconfig),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode() + text
    assert "ModelServer  default/v1" in text and "http://gw:8080/v1/models/v1" in text
    assert "default/v1 70% (stable), default/v2 30% (canary)" in text
    assert "canary Paused: 70/30" in text
