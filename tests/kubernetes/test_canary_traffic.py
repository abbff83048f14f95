"""A canary rollout in Kubernetes mode through a real Envoy gateway: the gateway is
rendered as in deploy/base/gateway.yaml (stats pushed over the TCP statsd sink), two mock
replicas behind EndpointSlices; under steady load the healthy canary is stepped to 100,
`status.canary` says Promoted, and the gateway then serves the canary only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from controller.local.envoy_process import EnvoyProcess
from controller.kubernetes.client import KubeClient
from controller.kubernetes.resources import MODEL_ROUTE
from modelroute.canary_wiring import merge_stats_sink, tcp_stats_sink
from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import endpoint_slice, mock_replica, model, model_infer, served_by, server
from tests.kubernetes.test_canary import canary_route
from tests.support import free_port
from xds_server.bootstrap import render_dict

pytestmark = pytest.mark.slow


async def test_healthy_canary_is_promoted_through_a_real_gateway(api: KubeClient, fake_api: FakeKubeApi,
                                                                 tmp_path: Path) -> None:
    gateway_port, replica_ports = free_port(), {"v1": free_port(), "v2": free_port()}
    fake_api.seed(model("llama"))
    for infer, port in replica_ports.items():
        fake_api.seed(model_infer(infer, model_name="llama"))
        fake_api.seed(server(infer, infer=infer, port=gateway_port, path=f"/v1/models/{infer}"))
        slice_ = endpoint_slice(f"{infer}-x", service=infer, ready={"127.0.0.1": True}, port=port)
        slice_["metadata"]["labels"]["workload.matrixinfer.ai/modelinfer"] = infer
        fake_api.seed(slice_)
    fake_api.seed(canary_route(interval="1s", step=50))
    replicas = [await mock_replica(infer, port) for infer, port in replica_ports.items()]
    mode = KubernetesMode(api, KubernetesOptions(identity="cp-0", system_namespace="matrixinfer-system",
                                                 xds_host="127.0.0.1", xds_port=0, listen_address="127.0.0.1",
                                                 lease_retry_s=0.05))
    envoy: EnvoyProcess | None = None
    stop = asyncio.Event()
    served: list[str | None] = []

    async def load() -> None:
        while not stop.is_set():
            served.append(await served_by(f"http://127.0.0.1:{gateway_port}/v1/chat/completions"))
            await asyncio.sleep(0.01)

    try:
        await mode.start()
        assert mode.plane is not None and mode.ratelimit is not None
        bootstrap = merge_stats_sink(
            render_dict("gateway", node_id="gw-0", cluster="gateway", xds_port=mode.plane.xds_port,
                        admin_port=free_port(), ratelimit_port=mode.ratelimit.port),
            tcp_stats_sink("localhost", mode.canary.port, flush_interval_ms=250))
        envoy = EnvoyProcess(bootstrap, tmp_path, name="gateway", log_level="warning")
        await envoy.start()
        workers = [asyncio.create_task(load()) for _ in range(3)]
        try:
            phases = []
            for _ in range(600):  # at most 60 s (a loaded machine)
                canary = ((fake_api.read(MODEL_ROUTE, "default", "chat") or {}).get("status") or {}).get("canary") or {}
                if not phases or phases[-1] != (canary.get("phase"), canary.get("canaryWeight")):
                    phases.append((canary.get("phase"), canary.get("canaryWeight")))
                if canary.get("phase") == "Promoted":
                    break
                await asyncio.sleep(0.1)
            assert phases[-1] == ("Promoted", 100), (phases, mode.canary.stats.datagrams)
            assert ("Progressing", 60) in phases, phases
            for _ in range(100):  # Envoy applies 0/100 (at most 10 s): then only the canary serves
                served.clear()
                await asyncio.sleep(0.5)
                if len(served) >= 10 and set(served) == {"default/v2"}:
                    break
        finally:
            stop.set()
            await asyncio.gather(*workers)
        assert len(served) >= 10 and set(served) == {"default/v2"}, served
        assert mode.canary.stats.datagrams > 0  # the stats came over the gateway's TCP sink
    finally:
        if envoy is not None:
            await envoy.stop()
        await mode.stop()
        for proc in replicas:
            proc.terminate()
            await proc.wait()
