"""ModelServer → gateway Service (type, port, annotations, Envoy's listener port) and its
serviceEndpoint; stale Services swept."""

from __future__ import annotations

from controller.kubernetes import gateway
from controller.kubernetes.client import KubeClient
from controller.kubernetes.resources import SERVICE
from routing_engine.api.resources import ModelServer
from routing_engine.world import Target
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import server

NS = "matrixinfer-system"


def public_server(name: str = "public", **service: object) -> ModelServer:
    doc = server(name, infer="i", port=443, path="/v1/models/production")
    doc["spec"]["service"].update({"type": "LoadBalancer", "annotations": {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}, **service})
    doc["spec"]["tls"] = {"enabled": True, "secretName": "model-server-tls"}
    return ModelServer.model_validate(doc)


def test_service_shape_and_unprivileged_target_port() -> None:
    svc = gateway.gateway_service(public_server(), namespace=NS, target=Target(privileged_port_offset=10000))
    assert svc["metadata"]["name"] == "ms-default-public" and svc["metadata"]["namespace"] == NS
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 443, "targetPort": 10443, "protocol": "TCP"}]
    assert svc["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    assert svc["spec"]["selector"] == gateway.GATEWAY_SELECTOR


def test_long_names_stay_valid_and_distinct() -> None:
    a = ModelServer.model_validate(server("x" * 60 + "a", infer="i"))
    b = ModelServer.model_validate(server("x" * 60 + "b", infer="i"))
    assert len(gateway.service_name(a)) <= 63 and gateway.service_name(a) != gateway.service_name(b)


def test_endpoint_prefers_load_balancer_ingress() -> None:
    ms = public_server()
    svc = gateway.gateway_service(ms, namespace=NS, target=Target())
    assert gateway.service_endpoint(ms, svc) == \
        "https://ms-default-public.matrixinfer-system.svc.cluster.local:443/v1/models/production"
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
    assert gateway.service_endpoint(ms, svc) == "https://203.0.113.7:443/v1/models/production"
    assert gateway.service_endpoint(ms, None) is None


async def test_reconcile_and_sweep(api: KubeClient, fake_api: FakeKubeApi) -> None:
    keep, drop = public_server("keep"), public_server("drop")
    for ms in (keep, drop):
        endpoint, outcome = await gateway.reconcile(api, ms, namespace=NS, target=Target())
        assert outcome == "created" and endpoint is not None
    assert (await gateway.reconcile(api, keep, namespace=NS, target=Target()))[1] == "unchanged"
    fake_api.seed({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "unrelated", "namespace": NS},
                   "spec": {"ports": [{"port": 1}]}})
    assert await gateway.sweep(api, namespace=NS, servers=[keep]) == ["ms-default-drop"]
    assert sorted(s["metadata"]["name"] for s in fake_api.items(SERVICE)) == ["ms-default-keep", "unrelated"]


async def test_annotation_change_updates_the_service(api: KubeClient, fake_api: FakeKubeApi) -> None:
    await gateway.reconcile(api, public_server(), namespace=NS, target=Target())
    changed = public_server(annotations={"service.beta.kubernetes.io/aws-load-balancer-type": "external"})
    assert (await gateway.reconcile(api, changed, namespace=NS, target=Target()))[1] == "updated"
    svc = fake_api.read(SERVICE, NS, "ms-default-public")
    assert svc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
