"""Kubernetes → engine: the provider feeds the real control loop, so a route changed in
the API server changes the compiled RDS, and an EndpointSlice change changes EDS — the
in-cluster half of "kubectl apply changes live traffic" without Envoy."""

from __future__ import annotations

from controller.kubernetes.client import KubeClient
from controller.kubernetes.provider import KubernetesProvider
from controller.provider import ProviderState
from controller.kubernetes.resources import ENDPOINT_SLICE, MODEL_ROUTE
from modelroute.control_loop import ControlLoop
from modelroute.targets import GATEWAY, Placement
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import endpoint_slice, eventually, model, model_infer, route, running, server

ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def bodies(loop: ControlLoop, type_url: str) -> bytes:
    compiled = loop.compiled.get(GATEWAY)
    if compiled is None:
        return b""
    return b"".join(r.body for r in compiled.resources.get(type_url, {}).values())


async def test_route_and_endpoint_changes_reach_the_compiled_config(api: KubeClient, fake_api: FakeKubeApi) -> None:
    for doc in (model(), model_infer(), server("llama-server", infer="llama-infer", path="/v1/models/a"),
                route("r1", path="/v1/chat", server="llama-server")):
        fake_api.seed(doc)
    loop = ControlLoop(placement=Placement(listen_address="127.0.0.1"), window=0.01, max_delay=0.05)

    async def publish(state: ProviderState) -> None:
        loop.set_objects(state.objects)
        loop.set_endpoints(state.endpoints)

    async with running(loop.debouncer.run()), running(KubernetesProvider(api).run(publish)):
        await eventually(lambda: b"/v1/chat" in bodies(loop, ROUTES), what="the route compiled")
        await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/completions"}})
        await eventually(lambda: b"/v1/completions" in bodies(loop, ROUTES) and b"/v1/chat" not in
                         bodies(loop, ROUTES), what="the changed route compiled")
        assert b"10.0.0.7" not in bodies(loop, ENDPOINTS)
        slice_ = endpoint_slice("llama-infer-x1", service="llama-infer", ready={"10.0.0.7": True})
        slice_["metadata"]["labels"]["workload.matrixinfer.ai/modelinfer"] = "llama-infer"
        await api.create(ENDPOINT_SLICE, slice_)
        await eventually(lambda: b"10.0.0.7" in bodies(loop, ENDPOINTS), what="the endpoint in EDS")
