"""ModelServers: listeners per port, backends, server routes, defaults, statuses."""

from __future__ import annotations

from routing_engine import ir
from routing_engine.world import BackendEndpoint, Target
from tests.resolve.build import cond, infer, listener, ms, objects, route_names, run, server, up


def test_one_listener_per_distinct_port_shared_by_servers() -> None:
    res = run([server("a", "/v1/a", 8080), server("b", "/v1/b", 8080), server("c", "/v1/c", 9090)])
    assert [(l.name, l.port, l.address) for l in res.gateway.listeners] == [
        ("listener/8080", 8080, "0.0.0.0"),
        ("listener/9090", 9090, "0.0.0.0"),
    ]
    assert route_names(res, 8080) == ["modelserver/default/a", "modelserver/default/b"]
    assert listener(res, 8080).ready_backends == ("modelserver/default/a", "modelserver/default/b")
    assert listener(res, 9090).ready_backends == ("modelserver/default/c",)


def test_listener_port_and_address_follow_the_target() -> None:
    res = run([server("a", "/v1/a", 80)], Target(role="sidecar", privileged_port_offset=10000))
    only = res.gateway.listeners[0]
    assert (only.name, only.address, only.port) == ("listener/10080", "127.0.0.1", 10080)
    assert res.statuses[ms("a")].service_endpoint == "http://127.0.0.1:10080/v1/a"


def test_routing_path_is_a_segment_prefix_in_normal_form() -> None:
    res = run([server("a", "/v1/models/a/")])
    assert res.gateway.listeners[0].routes[0].match == ir.RouteMatch(ir.PathMatch("segment_prefix", "/v1/models/a"))


def test_backend_endpoint_ports_endpoint_then_target_port_then_port() -> None:
    objs = [server("a", "/a", 8080, infer="ia", service={"targetPort": 9000}), infer("ia"),
            server("b", "/b", 8080, infer="ib"), infer("ib")]
    eps = {
        **{k: (BackendEndpoint("10.0.0.2"), BackendEndpoint("10.0.0.1", 7000, healthy=False)) for k in up("ia")},
        **up("ib"),
    }
    res = run(objs, endpoints=eps)
    backends = {b.name: b for b in res.gateway.backends}
    assert backends["modelserver/default/a"].endpoints == (
        ir.Endpoint("10.0.0.1", 7000, healthy=False),
        ir.Endpoint("10.0.0.2", 9000),
    )
    assert backends["modelserver/default/b"].endpoints == (ir.Endpoint("10.0.0.1", 8080),)


def test_defaults_60s_and_2_retries_explicit_values_override() -> None:
    res = run([server("a", "/a"), server("b", "/b", routing={"timeout": "1m30s", "retries": 0})])
    routes = {r.name: r for r in res.gateway.listeners[0].routes}
    assert (routes["modelserver/default/a"].timeout_ms, routes["modelserver/default/a"].retries) == (60_000, 2)
    assert (routes["modelserver/default/b"].timeout_ms, routes["modelserver/default/b"].retries) == (90_000, 0)


def test_ready_server_with_healthy_endpoint() -> None:
    res = run([server("a", "/v1/a"), infer("a")], endpoints=up("a"))
    status = res.statuses[ms("a")]
    assert status.phase == "Ready"
    assert [(c.type, c.status) for c in status.conditions] == [("Accepted", "True"), ("ResolvedRefs", "True"), ("Ready", "True")]
    assert status.service_endpoint == "http://localhost:8080/v1/a"


def test_only_unhealthy_endpoints_is_pending_not_ready() -> None:
    res = run([server("a", "/v1/a"), infer("a")], endpoints={k: (BackendEndpoint("10.0.0.1", healthy=False),) for k in up("a")})
    assert res.statuses[ms("a")].phase == "Pending"
    ready = cond(res, ms("a"), "Ready")
    assert (ready.status, ready.reason) == ("False", "NoHealthyEndpoints")


def test_missing_model_infer_compiles_without_endpoints_and_is_pending() -> None:
    res = run([server("a", "/v1/a", infer="gone")], endpoints=up("gone"))
    assert res.gateway.backends[0].endpoints == ()
    assert route_names(res, 8080) == ["modelserver/default/a"]
    status = res.statuses[ms("a")]
    assert status.phase == "Pending"
    refs = cond(res, ms("a"), "ResolvedRefs")
    assert (refs.status, refs.reason) == ("False", "ModelNotFound")
    assert refs.message == "ModelServer default/a: spec.modelInferRef: ModelInfer default/gone not found"
    assert cond(res, ms("a"), "Accepted").status == "True"


def test_cross_namespace_model_infer_denied_without_annotation() -> None:
    objs = [server("a", "/a", infer="m", infer_namespace="models"), infer("m", namespace="models")]
    res = run(objs, endpoints=up("m", namespace="models"))
    assert res.gateway.backends[0].endpoints == ()
    assert res.statuses[ms("a")].phase == "Failed"
    refs = cond(res, ms("a"), "ResolvedRefs")
    assert refs.reason == "NetworkPolicyViolation"
    assert "ModelInfer models/m does not allow references from namespace default" in refs.message


def test_cross_namespace_model_infer_allowed_by_annotation_on_the_target() -> None:
    for allow in ("default", "other, default", "*"):
        objs = [server("a", "/a", infer="m", infer_namespace="models"),
                infer("m", namespace="models", annotations={"networking.matrixinfer.ai/allow-from": allow})]
        res = run(objs, endpoints=up("m", namespace="models"))
        assert len(res.gateway.backends[0].endpoints) == 1, allow
        assert res.statuses[ms("a")].phase == "Ready"


def test_yaml_manifest_compiles() -> None:
    res = run(objects("""
apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelServer
metadata: {name: llama-server, namespace: default}
spec:
  modelInferRef: {name: llama-7b-infer}
  service: {type: ClusterIP, port: 8080}
  routing: {path: "/v1/models/llama-7b", timeout: "30s"}
---
apiVersion: workload.matrixinfer.ai/v1alpha1
kind: ModelInfer
metadata: {name: llama-7b-infer}
spec: {modelRef: {name: llama-7b}}
"""), endpoints=up("llama-7b-infer"))
    only = listener(res, 8080).routes[0]
    assert (only.name, only.timeout_ms, only.match.path.value) == ("modelserver/default/llama-server", 30_000, "/v1/models/llama-7b")
    assert res.statuses[ms("llama-server")].phase == "Ready"
