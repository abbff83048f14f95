"""The cluster side of Kubernetes mode against the fake API: every replica's provider
states reach it; only the leader creates workloads and gateway Services and writes
status (engine statuses with the Service's endpoint, ValidationFailed for invalid objects)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from controller.kubernetes.client import KubeClient
from controller.kubernetes.leader import LeaderElector
from controller.kubernetes.provider import KubernetesProvider
from controller.kubernetes.resources import DEPLOYMENT, MODEL_INFER, MODEL_ROUTE, MODEL_SERVER, SERVICE
from controller.kubernetes.runtime import KubernetesControlPlane
from controller.provider import ProviderState
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import ConditionView, ObjectStatus
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import eventually, model, model_infer, route, running, server

NS = "matrixinfer-system"


class Sink:
    """A replica's provider states: recorded, and handed to its cluster side (as the App does)."""

    def __init__(self) -> None:
        self.objects: tuple[Resource, ...] = ()
        self.plane: KubernetesControlPlane | None = None

    async def __call__(self, state: ProviderState) -> None:
        self.objects = state.objects
        if self.plane is not None:
            await self.plane.apply(state)


def plane(api: KubeClient, sink: Sink, identity: str) -> KubernetesControlPlane:
    elector = LeaderElector(api, namespace=NS, name="modelroute", identity=identity,
                            lease_duration=30, renew_deadline=20, retry_period=0.05)
    sink.plane = KubernetesControlPlane(api, identity=identity, system_namespace=NS, elector=elector)
    return sink.plane


@asynccontextmanager
async def replica(api: KubeClient, sink: Sink, plane: KubernetesControlPlane) -> AsyncIterator[None]:
    """One replica's provider and cluster side, running."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running(KubernetesProvider(api).run(sink)))
        await stack.enter_async_context(running(plane.run()))
        yield


async def test_leader_runs_workloads_gateway_and_status(api: KubeClient, fake_api: FakeKubeApi) -> None:
    bad = route("bad", server="llama-server")
    bad["spec"]["routes"][0]["timeout"] = "30"
    for doc in (model(), model_infer(), server("llama-server", infer="llama-infer"),
                route("r1", server="llama-server"), bad):
        fake_api.seed(doc)
    leader_sink, follower_sink = Sink(), Sink()
    leader = plane(api, leader_sink, "a")
    async with replica(api, leader_sink, leader):
        await eventually(lambda: leader.elector.is_leader, what="leadership")
        follower = plane(api, follower_sink, "b")
        async with replica(api, follower_sink, follower):
            await eventually(lambda: len(follower_sink.objects) == 4, what="the follower's snapshot")
            await eventually(lambda: len(leader_sink.objects) == 4, what="the leader's snapshot")
            await eventually(lambda: fake_api.read(DEPLOYMENT, "default", "llama-infer") is not None,
                             what="the Deployment")
            await eventually(lambda: (fake_api.read(MODEL_ROUTE, "default", "bad").get("status") or {})
                             .get("phase") == "Failed", what="ValidationFailed on the invalid route")
            assert not follower.elector.is_leader
            # No gateway Service before the engine has said which servers it compiled.
            assert fake_api.read(SERVICE, NS, "ms-default-llama-server") is None
            engine = {ObjectKey("ModelServer", "default", "llama-server"): ObjectStatus(
                          "Ready", (ConditionView("Accepted", "True", "Accepted"),),
                          service_endpoint="http://engine-guess:8080/v1/models/a"),
                      ObjectKey("ModelInfer", "default", "llama-infer"): ObjectStatus("Running", ())}
            assert await follower.write_statuses(engine) == 0
            assert await leader.write_statuses(engine) == 1
            await eventually(lambda: fake_api.read(SERVICE, NS, "ms-default-llama-server") is not None,
                             what="the gateway Service")
            await eventually(lambda: ObjectKey("ModelServer", "default", "llama-server") in leader.endpoints,
                             what="the gateway endpoint")
            assert await leader.write_statuses(engine) == 1  # now with the Service's endpoint
    bad_status = fake_api.read(MODEL_ROUTE, "default", "bad")["status"]
    assert bad_status["conditions"][0]["reason"] == "ValidationFailed"
    assert "spec.routes[0].timeout" in bad_status["conditions"][0]["message"]
    server_status = fake_api.read(MODEL_SERVER, "default", "llama-server")["status"]
    assert server_status["serviceEndpoint"] == \
        "http://ms-default-llama-server.matrixinfer-system.svc.cluster.local:8080/v1/models/a"
    # The ModelInfer's status is the workload controller's (from its Deployment), not the engine's.
    assert fake_api.read(MODEL_INFER, "default", "llama-infer")["status"]["phase"] == "Pending"


async def test_a_refused_server_gets_no_gateway_service_and_loses_the_one_it_had(
        api: KubeClient, fake_api: FakeKubeApi) -> None:
    """A LoadBalancer server refused for its port's exposure must not front the port."""
    public = server("public", infer="llama-infer", path="/v1/public")
    public["spec"]["service"]["type"] = "LoadBalancer"
    for doc in (model(), model_infer(), server("internal", infer="llama-infer"), public):
        fake_api.seed(doc)
    endpoint_changes: list[int] = []
    sink = Sink()
    leader = sink.plane = KubernetesControlPlane(
        api, identity="a", system_namespace=NS,
        elector=LeaderElector(api, namespace=NS, name="modelroute", identity="a", lease_duration=30,
                              renew_deadline=20, retry_period=0.05),
        on_endpoints=lambda: endpoint_changes.append(1))
    accepted = ConditionView("Accepted", "True", "Accepted")
    refused = ConditionView("Accepted", "False", "NetworkPolicyViolation", "port 8080 is exposed as ClusterIP")
    internal, public_key = ObjectKey("ModelServer", "default", "internal"), ObjectKey("ModelServer", "default", "public")
    async with replica(api, sink, leader):
        await eventually(lambda: leader.elector.is_leader, what="leadership")
        await leader.write_statuses({internal: ObjectStatus("Pending", (accepted,)),
                                     public_key: ObjectStatus("Pending", (accepted,))})
        await eventually(lambda: fake_api.read(SERVICE, NS, "ms-default-public") is not None, what="both Services")
        assert fake_api.read(SERVICE, NS, "ms-default-internal") is not None
        # The statuses are written again with the endpoints, once the gateway pass that
        # applied the Services ends (it may still be running when the second one appears).
        await eventually(lambda: bool(endpoint_changes), what="the endpoints announced")
        await leader.write_statuses({internal: ObjectStatus("Pending", (accepted,)),
                                     public_key: ObjectStatus("Failed", (refused,))})
        await eventually(lambda: fake_api.read(SERVICE, NS, "ms-default-public") is None,
                         what="the refused server's Service deleted")
        assert public_key not in leader.endpoints
        assert fake_api.read(SERVICE, NS, "ms-default-internal")["spec"]["type"] == "ClusterIP"
