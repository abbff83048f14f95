"""Canary rollouts in Kubernetes mode against the fake API: the leader's runner judges the
stats gateways push (statsd over TCP, as the in-cluster bootstrap sends them), writes
`status.canary`/`status.rollout`, applies `modelroute rollout --kubernetes` commands
(the real CLI, through the annotation), and a restarted control plane resumes from the
status; a follower applies the split the status shows."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.kubernetes.client import KubeClient
from controller.kubernetes.resources import MODEL_ROUTE, POD
from controller.kubernetes.runtime import LEADER_LABEL
from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions
from routing_engine.api.resources import ObjectKey
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import eventually, model, model_infer, server
from tests.support import REPO

ROUTE = ObjectKey("ModelRoute", "default", "chat")


def canary_route(*, interval: str = "1s", step: int = 50) -> dict[str, Any]:
    return {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute",
            "metadata": {"name": "chat", "namespace": "default"},
            "spec": {"path": "/v1/chat", "routes": [{"destination": {"modelServerRef": {"name": "v1"}}},
                                                    {"destination": {"modelServerRef": {"name": "v2"}}}],
                     "canary": {"enabled": True, "trafficSplit": {"stable": 90, "canary": 10},
                                "analysis": {"threshold": 95, "interval": interval, "stepWeight": step,
                                             "maxFailures": 2, "minRequests": 5}}}}


def seed(fake_api: FakeKubeApi, *, interval: str = "1s") -> None:
    fake_api.seed(model("llama"))
    for name in ("v1", "v2"):
        fake_api.seed(model_infer(name, model_name="llama"))
        fake_api.seed(server(name, infer=name, port=18080, path=f"/v1/models/{name}"))
    fake_api.seed(canary_route(interval=interval))


def mode_for(api: KubeClient, identity: str) -> KubernetesMode:
    mode = KubernetesMode(api, KubernetesOptions(identity=identity, system_namespace="matrixinfer-system",
                                                 xds_host="127.0.0.1", xds_port=0, listen_address="127.0.0.1",
                                                 lease_retry_s=0.05))
    return mode


def route_status(fake_api: FakeKubeApi) -> dict[str, Any]:
    return (fake_api.read(MODEL_ROUTE, "default", "chat") or {}).get("status") or {}


def canary_status(fake_api: FakeKubeApi) -> dict[str, Any]:
    return route_status(fake_api).get("canary") or {}


async def push_healthy_stats(port: int, stop: asyncio.Event, *, canary_5xx: int = 0) -> None:
    """A gateway's TCP statsd stream: 20 requests per 0.2 s to each variant, all 2xx but
    `canary_5xx` of the canary's (per upstream attempt, and per request from the access log)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while not stop.is_set():
            writer.write(b"envoy.cluster.modelserver/default/v1.upstream_rq_2xx:20|c\n"
                         + f"envoy.cluster.modelserver/default/v2.upstream_rq_2xx:{20 - canary_5xx}|c\n".encode()
                         + f"envoy.cluster.modelserver/default/v2.upstream_rq_5xx:{canary_5xx}|c\n".encode()
                         + b"envoy.cluster.modelserver/default/v2.upstream_rq_time:12|ms\n"
                         + b"envoy.modelroute_variant.requests.cluster.modelserver/default/v1.code.200:20|c\n"
                         + f"envoy.modelroute_variant.requests.cluster.modelserver/default/v2.code.200:{20 - canary_5xx}|c\n"
                           f"envoy.modelroute_variant.requests.cluster.modelserver/default/v2.code.503:{canary_5xx}|c\n"
                           .encode())
            await writer.drain()
            await asyncio.sleep(0.2)
    finally:
        writer.close()


async def rollout_cli(fake_api: FakeKubeApi, tmp_path: Path, *args: str) -> tuple[int, str]:
    """The real `modelroute rollout ... --kubernetes` against the fake API server."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: \"{fake_api.url}\"}}}}]\n"
        "users: [{name: me, user: {token: t}}]\ncontexts: [{name: fake, context: {cluster: fake, user: me}}]\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelroute.cli", "rollout", *args, "--kubernetes", "--kubeconfig", str(kubeconfig),
        "--wait", "10", cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": os.devnull})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def leader_label(fake_api: FakeKubeApi, pod: str) -> str | None:
    labels = ((fake_api.read(POD, "matrixinfer-system", pod) or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(LEADER_LABEL)


async def test_healthy_canary_is_promoted_and_written_to_status(api: KubeClient, fake_api: FakeKubeApi) -> None:
    seed(fake_api)
    fake_api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cp-0", "namespace": "matrixinfer-system",
                                                                   "labels": {"app.kubernetes.io/name": "modelroute"}}})
    mode = mode_for(api, "cp-0")
    stop = asyncio.Event()
    pusher: asyncio.Task[None] | None = None
    try:
        await mode.start()
        await eventually(lambda: canary_status(fake_api).get("phase") == "Progressing", timeout=10,
                         what="status.canary Progressing")
        assert (canary_status(fake_api)["stableWeight"], canary_status(fake_api)["canaryWeight"]) == (90, 10)
        pusher = asyncio.create_task(push_healthy_stats(mode.canary.port, stop))
        await eventually(lambda: canary_status(fake_api).get("phase") == "Promoted", timeout=15,
                         what="status.canary Promoted")
        status = route_status(fake_api)
        assert status["canary"]["canaryWeight"] == 100 and status["canary"]["lastSuccessRate"] == 100.0
        assert status["rollout"]["state"]["phase"] == "Promoted"
        assert status["rollout"]["report"]["variants"][1]["requests"] > 0
        conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
        assert conditions["Progressing"] == ("False", "CanaryPromoted")
        assert mode.loop.compiled  # the live split reached the engine
        assert mode.canary.runner is not None and mode.canary.runner.live_weights()[ROUTE] == (0, 100)
        assert leader_label(fake_api, "cp-0") == "true"  # the stats Service selects the leader
    finally:
        stop.set()
        if pusher is not None:
            await pusher
        await mode.stop()
    assert leader_label(fake_api, "cp-0") is None


async def test_failing_canary_is_rolled_back_and_degraded_in_status(api: KubeClient, fake_api: FakeKubeApi) -> None:
    seed(fake_api)
    mode = mode_for(api, "cp-0")
    stop = asyncio.Event()
    pusher: asyncio.Task[None] | None = None
    try:
        await mode.start()
        await eventually(lambda: canary_status(fake_api).get("phase") == "Progressing", timeout=10,
                         what="status.canary Progressing")
        pusher = asyncio.create_task(push_healthy_stats(mode.canary.port, stop, canary_5xx=6))  # 30% fail
        await eventually(lambda: canary_status(fake_api).get("phase") == "RolledBack", timeout=15,
                         what="status.canary RolledBack")
        status = route_status(fake_api)
        assert (status["canary"]["stableWeight"], status["canary"]["canaryWeight"]) == (100, 0)
        assert status["canary"]["failedIntervals"] == 2 and 60 < status["canary"]["lastSuccessRate"] < 80
        conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
        assert conditions["Degraded"] == ("True", "CanaryRolledBack")
    finally:
        stop.set()
        if pusher is not None:
            await pusher
        await mode.stop()


@pytest.mark.slow
async def test_cli_pause_and_promote_through_the_annotation_and_resume_after_restart(
        api: KubeClient, fake_api: FakeKubeApi, tmp_path: Path) -> None:
    seed(fake_api, interval="1h")  # nothing moves by itself: only the commands do
    mode = mode_for(api, "cp-0")
    try:
        await mode.start()
        await eventually(lambda: canary_status(fake_api).get("phase") == "Progressing", timeout=10,
                         what="status.canary Progressing")
        code, out = await rollout_cli(fake_api, tmp_path, "pause", "chat")
        assert code == 0 and "paused by the user at 10%" in out, out
        await eventually(lambda: canary_status(fake_api).get("phase") == "Paused", what="Paused in status")
        code, out = await rollout_cli(fake_api, tmp_path, "pause", "chat")
        assert code == 1 and "only a Progressing rollout can be paused" in out, out
        code, out = await rollout_cli(fake_api, tmp_path, "status", "default/chat")
        assert code == 0 and "phase Paused: stable 90% / canary 10%" in out, out
    finally:
        await mode.stop()
    assert mode.canary.runner is None
    # A new control plane resumes the Paused rollout from the status, not from the start;
    # a second replica (follower) applies the leader's split from the status.
    restarted, follower = mode_for(api, "cp-1"), mode_for(api, "cp-2")
    try:
        await restarted.start()
        await eventually(lambda: restarted.canary.runner is not None, timeout=20, what="the new leader's runner")
        runner = restarted.canary.runner
        assert runner is not None
        state = runner.state_of(ROUTE)
        assert state is not None and (state.phase, state.weights) == ("Paused", (90, 10))
        code, out = await rollout_cli(fake_api, tmp_path, "promote", "chat")
        assert code == 0 and "promoted by the user" in out, out
        await eventually(lambda: canary_status(fake_api).get("phase") == "Promoted", what="Promoted in status")
        await follower.start()
        await eventually(lambda: follower.canary._followed == {ROUTE: (0, 100)}, timeout=10,
                         what="the follower applying the promoted split")
        assert not follower.cluster.elector.is_leader
        # The annotation stays; its nonce is acknowledged, so nothing is applied twice.
        ack = route_status(fake_api)["rollout"]["command"]
        annotation = fake_api.read(MODEL_ROUTE, "default", "chat")["metadata"]["annotations"]
        assert annotation["rollout.matrixinfer.ai/command"] == f"promote@{ack['id']}" and ack["ok"] is True
    finally:
        await follower.stop()
        await restarted.stop()
