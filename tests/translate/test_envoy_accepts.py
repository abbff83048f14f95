"""The real Envoy 1.40 accepts what translate produces, feature by feature
(`envoy --mode validate` on the static bootstrap; runs two at a time)."""

from __future__ import annotations

from routing_engine import engine, ir
from routing_engine.translate import translate
from modelroute.envoy_check import validate, validate_many
from tests.translate.builders import JWKS, backend, gateway, listener, route, table_name

CERT_PEM = b"""-----BEGIN CERTIFICATE-----
MIIBhTCCASugAwIBAgIUB5Y9Xw0sYv2Kq3m2P9mP2bK3b1cwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""


def feature_gateways() -> dict[str, ir.Gateway]:
    jwt_remote = ir.JwtProvider("default/a", "https://issuer", ("aud",), jwks_uri="https://keys.example:8443/jwks")
    jwt_inline = ir.JwtProvider("default/b", "https://other", jwks_inline=JWKS)
    everything = (
        route("model", "a", match=ir.RouteMatch(ir.PathMatch("segment_prefix", "/v1"), model="llama")),
        route("split", ir.WeightedBackend("a", 100), ir.WeightedBackend("b", 0), path="/v1", retries=2),
        route("failover", ir.WeightedBackend("a", 1, failover_to="c"), ir.WeightedBackend("b", 1, failover_to="c"), path="/v2"),
        route("glob", "c", path="/v3/*/infer", kind="glob", timeout_ms=1500),
        route("exact", "c", path="/v4", kind="exact"),
        route("hdr", "a", match=ir.RouteMatch(
            ir.PathMatch("segment_prefix", "/"),
            headers=(("x-a", ir.StringMatch("regex", "v[0-9]+")), ("x-b", ir.StringMatch("present"))),
            query_params=(("q", ir.StringMatch("prefix", "z")),),
        )),
        route("jwt", "b", auth=(jwt_remote, jwt_inline), path="/secure"),
        route("key", "b", auth=(ir.ApiKeyAuth("default/b", "x-api-key", ("k1",)),), path="/keyed"),
    )
    limits = (("a", ir.RateLimit(10, 20)), ("c", ir.RateLimit(1, 1)), ("b", ir.RateLimit(5, 5, shared=True)))
    return {
        "plain": gateway(listener(route("r", "a"))),
        "everything": gateway(
            listener(*everything, ready_backends=("a", "b"), rate_limits=limits),
            listener(route("r", "a"), name="http-9000", port=9000, ready_backends=("a",)),
        ),
        "unhealthy_and_empty": gateway(
            listener(route("r", "a"), ready_backends=("a", "b")),
            backends=(backend("a", ir.Endpoint("10.0.0.1", 80, healthy=False)), ir.Backend("b", backend("b").owner)),
        ),
        "idle_backends_no_listener": gateway(backends=(backend("a"),)),
    }


def test_envoy_accepts_every_feature() -> None:
    cases = feature_gateways()
    verdicts = validate_many([engine.static_bootstrap(translate(gw).resources) for gw in cases.values()])
    failed = {name: v.message for name, v in zip(cases, verdicts, strict=True) if not v.ok}
    assert not failed


def test_envoy_check_reports_a_rejected_config() -> None:
    doc = engine.static_bootstrap(translate(gateway(listener(route("r", "a")))).resources)
    doc["static_resources"]["clusters"] = [c for c in doc["static_resources"]["clusters"] if c["name"] != "a"]
    verdict = validate(doc)
    assert not verdict.ok
    assert "unknown cluster 'a'" in verdict.message or "'a'" in verdict.message


def test_static_bootstrap_inlines_routes_and_endpoints() -> None:
    result = translate(gateway(listener(route("r", "a"))))
    static = engine.static_bootstrap(result.resources)["static_resources"]
    hcm = static["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "rds" not in hcm and hcm["route_config"]["name"] == table_name(result.resources, "http-8080")
    clusters = {c["name"]: c for c in static["clusters"]}
    assert clusters["a"]["type"] == "STATIC" and "eds_cluster_config" not in clusters["a"]
    assert clusters["a"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] == 9000
    assert clusters["modelroute_admin"]["load_assignment"]["endpoints"]
