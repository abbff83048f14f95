"""What the leader's writes cost the API server: a publication of statuses already
written, and a provider state whose ModelServers did not change, make no API call (at
10,000 routes each edit used to read every status and apply every gateway Service:
30,000 calls). A status is written again when its object changed (a spec edit's new
generation), a Service when its ModelServer did."""

from __future__ import annotations

from collections import Counter
from typing import Any

from controller.kubernetes.client import KubeClient
from controller.kubernetes.leader import LeaderElector
from controller.kubernetes.provider import KubernetesProvider
from controller.kubernetes.resources import MODEL_ROUTE, MODEL_SERVER, SERVICE, ResourceType
from controller.kubernetes.runtime import KubernetesControlPlane
from controller.provider import ProviderState
from routing_engine.api.resources import ObjectKey
from routing_engine.world import ConditionView, ObjectStatus
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import eventually, model, model_infer, route, running, server
from tests.kubernetes.test_runtime import NS, Sink

ACCEPTED = ObjectStatus("Ready", (ConditionView("Accepted", "True", "Accepted"),))
SERVER = ObjectKey("ModelServer", "default", "llama-server")
ROUTE = ObjectKey("ModelRoute", "default", "r1")


class Counting:
    """The API client, counting the calls that reach the API server by (method, kind)."""

    def __init__(self, api: KubeClient) -> None:
        self._api = api
        self.calls: Counter[tuple[str, str]] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._api, name)
        if name not in ("get", "create", "replace", "patch", "patch_status", "delete", "list"):
            return method

        async def counted(rtype: ResourceType, *args: Any, **kwargs: Any) -> Any:
            self.calls[(name, rtype.kind)] += 1
            return await method(rtype, *args, **kwargs)
        return counted

    def of(self, *kinds: str) -> int:
        return sum(n for (_, kind), n in self.calls.items() if kind in kinds)


async def test_statuses_and_services_already_in_place_cost_no_call(api: KubeClient, fake_api: FakeKubeApi) -> None:
    for doc in (model(), model_infer(), server("llama-server", infer="llama-infer"), route("r1", server="llama-server")):
        fake_api.seed(doc)
    counting = Counting(api)
    provider = KubernetesProvider(api)
    sink = Sink()

    def cached(rtype: ResourceType, namespace: str, name: str) -> dict | None:
        return provider.informers[rtype.kind].get(namespace, name)

    def in_cache(key: ObjectKey) -> dict:
        return provider.informers[key.kind].get(key.namespace, key.name) or {}

    leader = sink.plane = KubernetesControlPlane(
        counting, identity="a", system_namespace=NS, current=cached,  # type: ignore[arg-type]
        elector=LeaderElector(api, namespace=NS, name="modelroute", identity="a", lease_duration=30,
                              renew_deadline=20, retry_period=0.05))
    statuses = {SERVER: ACCEPTED, ROUTE: ACCEPTED}
    async with running(provider.run(sink)), running(leader.run()):
        await eventually(lambda: leader.elector.is_leader, what="leadership")
        assert await leader.write_statuses(statuses) == 2
        await eventually(lambda: SERVER in leader.endpoints, what="the gateway Service")
        endpoint = leader.endpoints[SERVER]
        # The server's status again, with the Service's endpoint now (unless the Service was
        # already there when the first write ran: the gateway pass runs beside it).
        await leader.write_statuses(statuses)
        await eventually(lambda: in_cache(SERVER).get("status", {}).get("serviceEndpoint") == endpoint
                         and in_cache(ROUTE).get("status"), what="the statuses in the informer cache")
        assert await leader.write_statuses(statuses) == 0  # compared once more, on the objects as written
        counting.calls.clear()
        compared: list[ObjectKey] = []
        write = leader.status.write

        async def counted_write(rtype: ResourceType, namespace: str, name: str, *args: Any, **kwargs: Any) -> bool:
            compared.append(ObjectKey(rtype.kind, namespace, name))
            return await write(rtype, namespace, name, *args, **kwargs)
        leader.status.write = counted_write  # type: ignore[method-assign]

        for _ in range(3):  # a publication, and a gateway pass over the very same ModelServers
            assert await leader.write_statuses(statuses) == 0
            await leader._gateway_services(ProviderState(tuple(sink.objects)))
        assert counting.of("ModelServer", "ModelRoute", "Service") == 0, counting.calls
        assert compared == []  # not even compared again: the very objects they were found written on

        # Spec edits: new generations to observe, and a new ModelServer object to apply.
        edited = await api.patch(MODEL_SERVER, "default", "llama-server",
                                 {"spec": {"service": {"annotations": {"team": "a"}}}})
        await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/b"}})
        await eventually(lambda: all(in_cache(k)["metadata"]["generation"] == 2 for k in statuses),
                         what="the edits in the informer cache")
        await eventually(lambda: (fake_api.read(SERVICE, NS, "ms-default-llama-server") or {})
                         .get("metadata", {}).get("annotations") == {"team": "a"}, what="the Service applied")
        assert counting.calls[("list", "Service")] == 0  # the same servers served: no sweep
        assert await leader.write_statuses(statuses) == 2
        assert fake_api.read(MODEL_SERVER, "default", "llama-server")["status"]["observedGeneration"] == \
            edited["metadata"]["generation"] == 2
        assert fake_api.read(MODEL_ROUTE, "default", "r1")["status"]["observedGeneration"] == 2
