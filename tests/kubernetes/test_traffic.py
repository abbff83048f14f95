"""`kubectl apply` changes live traffic: the real kubectl against the fake API server, the
Kubernetes mode of the control plane, a real Envoy gateway, and two mock model replicas
whose EndpointSlices point at them. Also: the leader writes the route's status back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from controller.local.envoy_process import EnvoyProcess
from controller.kubernetes.client import KubeClient
from controller.kubernetes.resources import MODEL_ROUTE
from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import endpoint_slice, mock_replica, model, model_infer, served_by, server
from tests.kubernetes.test_kubectl import kubectl
from tests.support import free_port
from xds_server.bootstrap import render_dict

pytestmark = pytest.mark.slow


PROMISE = 1.0  # seconds from the API accepting a change to the first request it answers (SPEC 3.8)


async def _listening(port: int, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            assert loop.time() - started < timeout, f"mock replica on {port} did not start"
            await asyncio.sleep(0.05)


async def _served_by_within(url: str, infer: str, since: float, timeout: float = PROMISE) -> float:
    """Seconds from `since` (loop time) until `url` is answered by `infer`."""
    loop = asyncio.get_running_loop()
    seen = None
    while loop.time() - since < timeout:
        seen = await served_by(url)
        if seen == infer:
            return loop.time() - since
        await asyncio.sleep(0.01)
    raise AssertionError(f"{url} not served by {infer} within {timeout}s (last: {seen})")


def _route(weight_v1: int) -> dict:
    return {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute",
            "metadata": {"name": "llama"},
            "spec": {"path": "/v1/models/llama", "routes": [
                {"destination": {"modelServerRef": {"name": "llama-v1"}}, "weight": weight_v1},
                {"destination": {"modelServerRef": {"name": "llama-v2"}}, "weight": 100 - weight_v1}]}}


async def test_kubectl_apply_moves_live_traffic(api: KubeClient, fake_api: FakeKubeApi, tmp_path: Path) -> None:
    gateway_port, replica_ports = free_port(), {"llama-v1": free_port(), "llama-v2": free_port()}
    fake_api.seed(model("llama"))
    for infer, port in replica_ports.items():
        fake_api.seed(model_infer(infer, model_name="llama"))
        fake_api.seed(server(infer, infer=infer, port=gateway_port, path=f"/v1/models/{infer}"))
        slice_ = endpoint_slice(f"{infer}-x", service=infer, ready={"127.0.0.1": True}, port=port)
        slice_["metadata"]["labels"]["workload.matrixinfer.ai/modelinfer"] = infer
        fake_api.seed(slice_)
    replicas = [await mock_replica(infer, port) for infer, port in replica_ports.items()]
    mode = KubernetesMode(api, KubernetesOptions(identity="cp-0", system_namespace="matrixinfer-system",
                                                 xds_host="127.0.0.1", xds_port=0, listen_address="127.0.0.1"))
    envoy: EnvoyProcess | None = None
    try:
        await mode.start()
        assert mode.plane is not None
        envoy = EnvoyProcess(render_dict("gateway", node_id="gw-0", cluster="gateway", xds_port=mode.plane.xds_port,
                                         admin_port=free_port()), tmp_path, name="gateway", log_level="warning")
        await envoy.start()
        url = f"http://127.0.0.1:{gateway_port}/v1/models/llama/infer"

        manifest = tmp_path / "route.yaml"
        manifest.write_text(yaml.safe_dump(_route(100)))
        await kubectl(fake_api.url, tmp_path, "apply", "--validate=false", "-f", str(manifest))
        await _served_by_within(url, "default/llama-v1", asyncio.get_running_loop().time())

        manifest.write_text(yaml.safe_dump(_route(0)))
        await kubectl(fake_api.url, tmp_path, "apply", "--validate=false", "-f", str(manifest))
        await _served_by_within(url, "default/llama-v2", asyncio.get_running_loop().time())
        assert {await served_by(url) for _ in range(20)} == {"default/llama-v2"}

        async def route_status() -> dict:
            for _ in range(100):
                obj = fake_api.read(MODEL_ROUTE, "default", "llama") or {}
                conditions = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
                if obj.get("status", {}).get("phase") == "Active" and conditions.get("Programmed") == "True":
                    return obj["status"]
                await asyncio.sleep(0.1)
            raise AssertionError(f"route status never became Active+Programmed: {obj.get('status')}")

        status = await route_status()
        assert status["observedGeneration"] == (fake_api.read(MODEL_ROUTE, "default", "llama") or {})["metadata"]["generation"]
    finally:
        if envoy is not None:
            await envoy.stop()
        await mode.stop()
        for proc in replicas:
            proc.terminate()
            await proc.wait()


@pytest.mark.parametrize("delta", [pytest.param(False, id="sotw"), pytest.param(True, id="delta")])
async def test_an_envoy_connected_before_the_world_loads_serves_new_models_within_a_second(
        api: KubeClient, fake_api: FakeKubeApi, tmp_path: Path, delta: bool) -> None:
    """Envoy connects to a control plane with nothing to serve yet (what happens before
    the informers have synced); then the world loads, then a model is added on the same
    port and one on a new port. Each is served within a second of the API accepting it."""
    ports = {"m1": free_port(), "m2": free_port(), "m3": free_port()}
    gateway_port, new_port = free_port(), free_port()
    replicas: list[asyncio.subprocess.Process] = []
    mode = KubernetesMode(api, KubernetesOptions(identity="cp-0", system_namespace="matrixinfer-system",
                                                 xds_host="127.0.0.1", xds_port=0, listen_address="127.0.0.1"))
    envoy: EnvoyProcess | None = None
    loop = asyncio.get_running_loop()

    def add(infer: str, port: int, *, at: int) -> float:
        fake_api.seed(model_infer(infer, model_name="llama"))
        slice_ = endpoint_slice(f"{infer}-x", service=infer, ready={"127.0.0.1": True}, port=ports[infer])
        slice_["metadata"]["labels"]["workload.matrixinfer.ai/modelinfer"] = infer
        fake_api.seed(slice_)
        fake_api.seed(server(infer, infer=infer, port=at, path=f"/v1/models/{infer}"))
        return loop.time()

    try:
        for infer, port in ports.items():  # up and answering before their objects exist
            replicas.append(await mock_replica(infer, port))
            await _listening(port)
        await mode.start()
        assert mode.plane is not None
        envoy = EnvoyProcess(render_dict("gateway", node_id="gw-0", cluster="gateway", xds_port=mode.plane.xds_port,
                                         admin_port=free_port(), delta=delta), tmp_path, name="gateway",
                             log_level="warning")
        await envoy.start()  # LIVE: it got (empty) clusters and listeners
        fake_api.seed(model("llama"))
        took = {"world": await _served_by_within(f"http://127.0.0.1:{gateway_port}/v1/models/m1/infer",
                                                 "default/m1", add("m1", ports["m1"], at=gateway_port))}
        took["same port"] = await _served_by_within(f"http://127.0.0.1:{gateway_port}/v1/models/m2/infer",
                                                    "default/m2", add("m2", ports["m2"], at=gateway_port))
        took["new port"] = await _served_by_within(f"http://127.0.0.1:{new_port}/v1/models/m3/infer",
                                                   "default/m3", add("m3", ports["m3"], at=new_port))
        print("served after: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in took.items()))
    finally:
        if envoy is not None:
            await envoy.stop()
        await mode.stop()
        for proc in replicas:
            proc.terminate()
            await proc.wait()
