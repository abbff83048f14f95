"""Two ModelServers on one port: path claims and the port's TLS mode, oldest first."""

from __future__ import annotations

from typing import Any
from routing_engine.api.resources import Resource

from tests.resolve.build import cond, infer, listener, ms, route_names, run, secret, server
from tests.translate.builders import TLS_CERT, TLS_KEY

CERT, KEY = TLS_CERT.decode(), TLS_KEY.decode()


def tls_secret(name: str, namespace: str = "default") -> Resource:
    return secret(name, {"tls.crt": CERT, "tls.key": KEY}, namespace=namespace)


def tls(name: str) -> dict[str, Any]:
    return {"tls": {"enabled": True, "secretName": name}}


def test_same_port_and_path_older_server_wins() -> None:
    res = run([
        server("young", "/v1/x", created="2024-02-01T00:00:00Z"),
        server("old", "/v1/x/", created="2024-01-01T00:00:00Z"),
    ])
    assert route_names(res, 8080) == ["modelserver/default/old"]
    assert res.statuses[ms("young")].phase == "Failed"
    accepted = cond(res, ms("young"), "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "NetworkPolicyViolation")
    assert "already served by the older ModelServer default/old" in accepted.message
    assert "spec.routing.path" in accepted.message
    assert res.statuses[ms("young")].service_endpoint is None
    assert cond(res, ms("old"), "Accepted").status == "True"


def test_without_timestamps_namespace_then_name_decides() -> None:
    res = run([server("b", "/x", namespace="aa"), server("a", "/x", namespace="bb")])
    assert route_names(res, 8080) == ["modelserver/aa/b"]
    assert res.statuses[ms("a", "bb")].phase == "Failed"


def test_timestamped_server_is_older_than_one_without() -> None:
    res = run([server("a", "/x"), server("z", "/x", created="2030-01-01T00:00:00Z")])
    assert route_names(res, 8080) == ["modelserver/default/z"]


def test_same_path_on_different_ports_is_no_conflict() -> None:
    res = run([server("a", "/x", 8080), server("b", "/x", 9090)])
    assert route_names(res, 8080) == ["modelserver/default/a"]
    assert route_names(res, 9090) == ["modelserver/default/b"]


def test_tls_and_plain_http_on_one_port_older_decides() -> None:
    res = run([
        server("plain", "/p", 8443, created="2024-01-02T00:00:00Z"),
        server("secure", "/s", 8443, created="2024-01-01T00:00:00Z", **tls("cert")),
        tls_secret("cert"),
    ])
    only = listener(res, 8443)
    assert only.tls is not None and only.tls.name == "secret/default/cert"
    assert only.tls.cert_chain == CERT.encode()
    assert route_names(res, 8443) == ["modelserver/default/secure"]
    accepted = cond(res, ms("plain"), "Accepted")
    assert accepted.reason == "NetworkPolicyViolation"
    assert "served with TLS with secret/default/cert by the older ModelServer default/secure" in accepted.message
    assert res.statuses[ms("secure")].service_endpoint == "https://localhost:8443/s"


def test_two_different_tls_secrets_on_one_port_conflict_same_secret_shares() -> None:
    res = run([
        server("a", "/a", 443, created="2024-01-01T00:00:00Z", **tls("one")),
        server("b", "/b", 443, created="2024-01-02T00:00:00Z", **tls("two")),
        server("c", "/c", 443, created="2024-01-03T00:00:00Z", **tls("one")),
        tls_secret("one"), tls_secret("two"),
    ])
    assert route_names(res, 443) == ["modelserver/default/a", "modelserver/default/c"]
    assert res.statuses[ms("b")].phase == "Failed"
    assert "asks for TLS with secret/default/two" in cond(res, ms("b"), "Accepted").message


def test_missing_tls_secret_fails_the_server_and_frees_the_port() -> None:
    res = run([
        server("secure", "/s", 8443, created="2024-01-01T00:00:00Z", **tls("absent")),
        server("plain", "/p", 8443, created="2024-01-02T00:00:00Z"),
    ])
    assert route_names(res, 8443) == ["modelserver/default/plain"]
    assert listener(res, 8443).tls is None
    status = res.statuses[ms("secure")]
    assert status.phase == "Failed"
    refs = cond(res, ms("secure"), "ResolvedRefs")
    assert (refs.status, refs.reason) == ("False", "ModelNotFound")
    assert refs.message.endswith("ModelServer default/secure: spec.tls.secretName: Secret default/absent not found")
    accepted = cond(res, ms("secure"), "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "ModelNotFound")
    assert accepted.message == "ModelServer default/secure: spec.tls.secretName: Secret default/absent not found"


def test_tls_secret_without_key_fails_validation() -> None:
    res = run([server("s", "/s", 8443, **tls("half")), secret("half", {"tls.crt": CERT}), infer("s")])
    assert res.gateway.listeners == ()
    refs = cond(res, ms("s"), "ResolvedRefs")
    assert refs.reason == "ValidationFailed"
    assert "tls.key" in refs.message


def test_tls_secret_in_another_namespace_is_not_used() -> None:
    res = run([server("s", "/s", 8443, **tls("cert")), tls_secret("cert", namespace="other")])
    assert res.gateway.listeners == ()
    assert cond(res, ms("s"), "ResolvedRefs").reason == "ModelNotFound"


def test_privileged_offset_merging_ports_is_a_claim_on_one_listener() -> None:
    from routing_engine.world import Target

    res = run([server("low", "/x", 80, created="2024-01-01T00:00:00Z"), server("high", "/x", 10080)],
              Target(privileged_port_offset=10000))
    assert [l.port for l in res.gateway.listeners] == [10080]
    assert route_names(res, 10080) == ["modelserver/default/low"]
    assert "port 10080 path /x" in cond(res, ms("high"), "Accepted").message


CLUSTER = {"one_exposure_per_port": True}


def test_cluster_refuses_a_public_service_on_a_clusterip_servers_port() -> None:
    from routing_engine.world import Target

    world = [
        server("internal", "/internal", created="2024-01-01T00:00:00Z"),
        server("public", "/public", created="2024-01-02T00:00:00Z", service={"type": "LoadBalancer"}),
        infer("internal"), infer("public"),
    ]
    res = run(world, Target(**CLUSTER))
    assert route_names(res, 8080) == ["modelserver/default/internal"]
    accepted = cond(res, ms("public"), "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "NetworkPolicyViolation")
    assert "spec.service.type" in accepted.message
    assert "exposed as ClusterIP (inside the cluster only) by the older ModelServer default/internal" in accepted.message
    assert "asks for LoadBalancer without annotations" in accepted.message
    # Without Services (embedded mode, offline compile) exposure means nothing: both serve.
    assert route_names(run(world), 8080) == ["modelserver/default/internal", "modelserver/default/public"]


def test_cluster_refuses_a_clusterip_server_on_a_public_port_and_a_different_load_balancer() -> None:
    from routing_engine.world import Target

    internal_lb = {"type": "LoadBalancer", "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}}
    res = run([
        server("public", "/a", created="2024-01-01T00:00:00Z", service={"type": "LoadBalancer"}),
        server("shared", "/b", created="2024-01-02T00:00:00Z", service={"type": "LoadBalancer"}),
        server("hidden", "/c", created="2024-01-03T00:00:00Z"),
        server("internal-lb", "/d", created="2024-01-04T00:00:00Z", service=internal_lb),
        server("node", "/e", created="2024-01-05T00:00:00Z", service={"type": "NodePort"}),
    ], Target(**CLUSTER))
    assert route_names(res, 8080) == ["modelserver/default/public", "modelserver/default/shared"]
    assert "asks for ClusterIP (inside the cluster only)" in cond(res, ms("hidden"), "Accepted").message
    assert ("asks for LoadBalancer with annotations {service.beta.kubernetes.io/aws-load-balancer-internal=true}"
            in cond(res, ms("internal-lb"), "Accepted").message)
    assert "asks for NodePort (on every node's address)" in cond(res, ms("node"), "Accepted").message


def test_a_server_that_loses_exposure_holds_no_path() -> None:
    from routing_engine.world import Target

    res = run([
        server("public", "/a", created="2024-01-01T00:00:00Z", service={"type": "NodePort"}),
        server("hidden", "/x", created="2024-01-02T00:00:00Z"),
        server("later", "/x", created="2024-01-03T00:00:00Z", service={"type": "NodePort"}),
    ], Target(**CLUSTER))
    assert route_names(res, 8080) == ["modelserver/default/later", "modelserver/default/public"]
    assert cond(res, ms("later"), "Accepted").status == "True"


def test_a_port_the_gateway_uses_itself_is_refused() -> None:
    from routing_engine.world import Target

    res = run([server("a", "/a", 19002), server("b", "/b", 902)],
              Target(privileged_port_offset=10000, reserved_ports=frozenset({19002, 10902})))
    assert res.gateway.listeners == ()
    accepted = cond(res, ms("a"), "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "NetworkPolicyViolation")
    assert "spec.service.port: port 19002 is used by the gateway Envoy itself" in accepted.message
    assert "port 902 (listener port 10902) is used by the gateway Envoy itself" in cond(res, ms("b"), "Accepted").message
