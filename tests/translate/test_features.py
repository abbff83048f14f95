"""Feature plugins and the cluster/endpoint/secret drivers, from hand-built IR."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2 as core_hc
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_rl
from envoy.extensions.filters.http.api_key_auth.v3 import api_key_auth_pb2 as akpb
from envoy.extensions.filters.http.composite.v3 import composite_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2
from envoy.extensions.filters.http.json_to_metadata.v3 import json_to_metadata_pb2 as j2m
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from routing_engine import ir
from routing_engine.incremental import Translator
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from tests.translate.builders import JWKS, backend, gateway, hcm_of, listener, parsed, route, routes_of, table_of

CERT = ir.TlsCertificate("default/tls-cert", b"-----BEGIN CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n")
JWT_REMOTE = ir.JwtProvider("default/llama", "https://issuer.example", ("api",), jwks_uri="https://keys.example/jwks.json")
JWT_INLINE = ir.JwtProvider("default/gemma", "https://other.example", jwks_inline=JWKS)


def filters(result, name: str = "http-8080"):  # type: ignore[no-untyped-def]
    return {f.name: f for f in hcm_of(parsed(result, LISTENER, name)).http_filters}


def unpack(any_msg, message):  # type: ignore[no-untyped-def]
    assert any_msg.Unpack(message)
    return message


def test_filter_order_follows_ranks_and_router_is_last() -> None:
    r = route("r", "a", match=ir.RouteMatch(ir.PathMatch("segment_prefix", "/v1"), model="m"), auth=(JWT_INLINE, ir.ApiKeyAuth("k", "x-api-key", ("s",))))
    result = Translator().translate(gateway(listener(r, rate_limits=(("a", ir.RateLimit(5, 5)),))))
    assert list(filters(result)) == [
        "modelroute.ready",
        "envoy.filters.http.json_to_metadata",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.api_key_auth",
        "envoy.filters.http.local_ratelimit",
        "modelroute.request_bytes",
        "modelroute.usage",
        "envoy.filters.http.router",
    ]


def test_plain_listener_has_only_readiness_the_usage_reader_and_router() -> None:
    result = Translator().translate(gateway(listener(route("r", "a"))))
    assert list(filters(result)) == ["modelroute.ready", "modelroute.request_bytes", "modelroute.usage",
                                     "envoy.filters.http.router"]


def test_listener_uses_rds_over_ads_on_its_port() -> None:
    result = Translator().translate(gateway(listener(route("r", "a"), port=9443, name="https-9443")))
    proto = parsed(result, LISTENER, "https-9443")
    assert proto.address.socket_address.port_value == 9443
    hcm = hcm_of(proto)
    # Named after the listener's content: the table can only reach the listener it was built for.
    assert hcm.rds.route_config_name.startswith("https-9443/")
    assert set(result.resources[ROUTE]) == {hcm.rds.route_config_name}
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.stat_prefix == "https-9443"


def _ready_checks(result: object, listener_name: str = "http-8080") -> dict[str, tuple[str, str, list[str]]]:
    """The `/ready` route's checks: `:path` → (filter name, the check's own path, clusters)."""
    ready = routes_of(table_of(result, listener_name))["modelroute/ready"]
    per_route = unpack(ready.typed_per_filter_config["modelroute.ready"],
                       extension_matcher_pb2.ExtensionWithMatcherPerRoute())
    tree = per_route.xds_matcher.matcher_tree
    assert unpack(tree.input.typed_config, http_inputs_pb2.HttpRequestHeaderMatchInput()).header_name == ":path"
    checks = {}
    for path, on_match in tree.exact_match_map.map.items():
        action = unpack(on_match.action.typed_config, composite_pb2.ExecuteFilterAction())
        hc = unpack(action.typed_config.typed_config, health_check_pb2.HealthCheck())
        assert not hc.pass_through_mode.value
        percentages = {cluster: p.value for cluster, p in hc.cluster_min_healthy_percentages.items()}
        assert set(percentages.values()) <= {1.0}  # Envoy truncates the percentage to an integer: 1 is the smallest that works
        checks[path] = (action.typed_config.name, hc.headers[0].string_match.exact, sorted(percentages))
    return checks


def test_health_ready_and_metrics() -> None:
    result = Translator().translate(gateway(listener(route("r", "a"), ready_backends=("a",))))
    routes = routes_of(table_of(result, "http-8080"))
    assert routes["modelroute/health"].direct_response.status == 200
    metrics = routes["modelroute/metrics"]
    assert (metrics.route.cluster, metrics.route.prefix_rewrite) == ("modelroute_admin", "/stats/prometheus")
    assert routes["modelroute/ready"].direct_response.status == 404  # what no check answers
    assert _ready_checks(result) == {"/ready": ("envoy.filters.http.health_check", "/ready", ["a"]),
                                     "/ready?server=a": ("modelroute.ready/a", "/ready?server=a", ["a"])}


def test_ready_per_server_asks_about_that_server_only() -> None:
    result = Translator().translate(gateway(listener(route("r", "modelserver/default/a"), route("s", "modelserver/ns/b"),
                                                     ready_backends=("modelserver/default/a", "modelserver/ns/b"))))
    assert _ready_checks(result) == {
        "/ready": ("envoy.filters.http.health_check", "/ready", ["modelserver/default/a", "modelserver/ns/b"]),
        "/ready?server=default/a": ("modelroute.ready/modelserver/default/a", "/ready?server=default/a",
                                    ["modelserver/default/a"]),
        "/ready?server=ns/b": ("modelroute.ready/modelserver/ns/b", "/ready?server=ns/b", ["modelserver/ns/b"]),
    }
    # The chain has one composite filter with no matcher of its own: the checks are the
    # /ready route's, so other requests create none of them, and servers coming and going
    # leave the Listener as it is.
    chain = filters(result)
    composite = unpack(chain["modelroute.ready"].typed_config, extension_matcher_pb2.ExtensionWithMatcher())
    assert not composite.HasField("xds_matcher") and not composite.HasField("matcher")
    assert not [name for name in chain if "health_check" in name or name.startswith("modelroute.ready/")]


def test_servers_coming_and_going_change_the_ready_route_not_the_listener() -> None:
    one = Translator().translate(gateway(listener(route("r", "modelserver/default/a"),
                                                  ready_backends=("modelserver/default/a",))))
    two = Translator().translate(gateway(listener(route("r", "modelserver/default/a"),
                                                  ready_backends=("modelserver/default/a", "modelserver/ns/b"))))
    assert one.resources[LISTENER] == two.resources[LISTENER]
    assert set(_ready_checks(two)) - set(_ready_checks(one)) == {"/ready?server=ns/b"}


def test_metrics_is_not_served_on_a_port_whose_routes_need_authentication() -> None:
    secured = route("r", "a", auth=(ir.ApiKeyAuth("k", "x-api-key", ("s",)),))
    result = Translator().translate(gateway(listener(secured, route("o", "b", match=ir.RouteMatch(
        ir.PathMatch("segment_prefix", "/open")))), listener(route("p", "b"), name="http-9000", port=9000)))
    assert "modelroute/metrics" not in routes_of(table_of(result, "http-8080"))
    assert "modelroute/health" in routes_of(table_of(result, "http-8080"))
    assert "modelroute/metrics" in routes_of(table_of(result, "http-9000"))


def test_model_match_filter_only_where_needed() -> None:
    m = ir.RouteMatch(ir.PathMatch("segment_prefix", "/v1"), model="m")
    result = Translator().translate(
        gateway(listener(route("r", "a", match=m)), listener(route("s", "a"), name="http-9000", port=9000))
    )
    assert "envoy.filters.http.json_to_metadata" not in filters(result, "http-9000")
    config = unpack(filters(result)["envoy.filters.http.json_to_metadata"].typed_config, j2m.JsonToMetadata())
    (rule,) = config.request_rules.rules
    assert rule.selectors[0].key == "model"
    assert (rule.on_present.metadata_namespace, rule.on_present.key) == ("modelroute", "model")


def test_jwt_providers_requirements_and_per_route_config() -> None:
    secured = route("secured", "a", auth=(JWT_REMOTE,), path="/a")
    both = route("both", "b", auth=(JWT_REMOTE, JWT_INLINE), path="/b")
    open_route = route("open", "a", path="/c")
    result = Translator().translate(gateway(listener(secured, both, open_route)))
    config = unpack(filters(result)["envoy.filters.http.jwt_authn"].typed_config, jwt_pb2.JwtAuthentication())
    remote = config.providers["default/llama"]
    assert remote.issuer == "https://issuer.example" and list(remote.audiences) == ["api"]
    assert remote.remote_jwks.http_uri.cluster == "jwks/default/llama"
    assert config.providers["default/gemma"].local_jwks.inline_string == JWKS
    assert config.requirement_map["default/llama"].provider_name == "default/llama"
    all_of = config.requirement_map["default/gemma+default/llama"].requires_all.requirements
    assert [r.provider_name for r in all_of] == ["default/gemma", "default/llama"]
    routes = routes_of(table_of(result, "http-8080"))
    per_route = unpack(routes["both"].typed_per_filter_config["envoy.filters.http.jwt_authn"], jwt_pb2.PerRouteConfig())
    assert per_route.requirement_name == "default/gemma+default/llama"
    assert "envoy.filters.http.jwt_authn" not in routes["open"].typed_per_filter_config
    jwks = parsed(result, CLUSTER, "jwks/default/llama")
    assert jwks.type == cluster_pb2.Cluster.LOGICAL_DNS
    socket = jwks.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (socket.address, socket.port_value) == ("keys.example", 443)
    assert unpack(jwks.transport_socket.typed_config, tls_pb2.UpstreamTlsContext()).sni == "keys.example"
    assert "jwks/default/gemma" not in result.resources[CLUSTER]
    assert result.owners[(CLUSTER, "jwks/default/llama")] == tuple(sorted({secured.owner, both.owner}))


def test_api_key_filter_disabled_by_default_enabled_per_route() -> None:
    keyed = route("keyed", "a", auth=(ir.ApiKeyAuth("default/a", "X-API-Key", ("k1", "k2")),), path="/a")
    result = Translator().translate(gateway(listener(keyed, route("open", "a", path="/b"))))
    listener_filter = filters(result)["envoy.filters.http.api_key_auth"]
    assert listener_filter.disabled
    routes = routes_of(table_of(result, "http-8080"))
    enabled = unpack(routes["keyed"].typed_per_filter_config["envoy.filters.http.api_key_auth"], rc.FilterConfig())
    assert not enabled.disabled
    config = unpack(enabled.config, akpb.ApiKeyAuthPerRoute())
    assert [c.key for c in config.credentials] == ["k1", "k2"]
    assert config.key_sources[0].header == "x-api-key"
    assert not routes["open"].typed_per_filter_config


def test_rate_limit_bucket_per_backend_including_failover_clusters() -> None:
    r1 = route("r1", ir.WeightedBackend("a", 1), ir.WeightedBackend("b", 1), path="/x")
    r2 = route("r2", ir.WeightedBackend("a", 1, failover_to="fb"), path="/y")
    limits = (("a", ir.RateLimit(10, 30)), ("b", ir.RateLimit(5, 5, shared=True)))
    result = Translator().translate(gateway(listener(r1, r2, rate_limits=limits)))
    config = unpack(filters(result)["envoy.filters.http.local_ratelimit"].typed_config, lrl_pb2.LocalRateLimit())
    assert config.enable_x_ratelimit_headers == common_rl.DRAFT_VERSION_03
    assert config.filter_enabled.default_value.numerator == 100 and config.filter_enforced.default_value.numerator == 100
    assert config.rate_limits[0].actions[0].HasField("destination_cluster")
    buckets = {d.entries[0].value: d.token_bucket for d in config.descriptors}
    assert set(buckets) == {"a", "failover/a/fb"}  # shared (global) limits get no local bucket
    assert (buckets["a"].max_tokens, buckets["a"].tokens_per_fill.value, buckets["a"].fill_interval.seconds) == (30, 10, 1)
    assert all(d.entries[0].key == "destination_cluster" for d in config.descriptors)
    assert not routes_of(table_of(result, "http-8080"))["r1"].typed_per_filter_config


def test_tls_listener_references_sds_secret() -> None:
    result = Translator().translate(gateway(listener(route("r", "a"), tls=CERT)))
    chain = parsed(result, LISTENER, "http-8080").filter_chains[0]
    context = unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext())
    (sds,) = context.common_tls_context.tls_certificate_sds_secret_configs
    assert sds.name == "default/tls-cert" and sds.sds_config.HasField("ads")
    secret = parsed(result, SECRET, "default/tls-cert")
    assert secret.tls_certificate.certificate_chain.inline_bytes == CERT.cert_chain
    assert "BEGIN PRIVATE KEY" not in repr(CERT)


def test_backend_cluster_is_eds_least_request_with_outlier_detection() -> None:
    result = Translator().translate(gateway(listener(route("r", "a")), backends=(ir.Backend("a", backend("a").owner, (), 2500),)))
    proto = parsed(result, CLUSTER, "a")
    assert proto.type == cluster_pb2.Cluster.EDS and proto.eds_cluster_config.eds_config.HasField("ads")
    assert proto.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert proto.outlier_detection.consecutive_5xx.value == 5
    assert proto.connect_timeout.nanos == 500_000_000 and proto.connect_timeout.seconds == 2
    assert not parsed(result, ENDPOINT, "a").endpoints  # no replicas yet: empty, not missing


def test_endpoint_health_is_explicit_and_sorted() -> None:
    b = ir.Backend("a", backend("a").owner, (ir.Endpoint("10.0.0.2", 80, healthy=False), ir.Endpoint("10.0.0.1", 80)))
    result = Translator().translate(gateway(listener(route("r", "a")), backends=(b,)))
    lbs = parsed(result, ENDPOINT, "a").endpoints[0].lb_endpoints
    assert [(e.endpoint.address.socket_address.address, e.health_status) for e in lbs] == [
        ("10.0.0.1", core_hc.HEALTHY),
        ("10.0.0.2", core_hc.UNHEALTHY),
    ]


def test_failover_cluster_is_the_primarys_with_fallback_hosts_at_priority_1() -> None:
    primary = ir.Backend("a", backend("a").owner, (ir.Endpoint("10.0.0.2", 80, healthy=False), ir.Endpoint("10.0.0.1", 80)),
                         load_balancing="prefixAffinity", adapters=("sql",))
    spare = backend("fb", ir.Endpoint("10.0.1.1", 81))
    r = route("r", ir.WeightedBackend("a", 1, failover_to="fb"))
    result = Translator().translate(gateway(listener(r), backends=(primary, spare)))
    proto = parsed(result, CLUSTER, "failover/a/fb")
    expected = parsed(result, CLUSTER, "a")
    expected.name = "failover/a/fb"
    assert proto == expected  # EDS, MAGLEV and subsets as the primary's: no aggregate cluster
    assert proto.type == cluster_pb2.Cluster.EDS and not proto.HasField("cluster_type")
    hosts = {(e.priority, lb.endpoint.address.socket_address.address, lb.health_status)
             for e in parsed(result, ENDPOINT, "failover/a/fb").endpoints for lb in e.lb_endpoints}
    assert hosts == {(0, "10.0.0.1", core_hc.HEALTHY), (0, "10.0.0.2", core_hc.UNHEALTHY), (1, "10.0.1.1", core_hc.HEALTHY)}
    assert parsed(result, ENDPOINT, "failover/a/fb").cluster_name == "failover/a/fb"
    for t in (CLUSTER, ENDPOINT):
        assert set(result.owners[(t, "failover/a/fb")]) == {r.owner, backend("a").owner, backend("fb").owner}


def test_failover_fallback_stays_priority_1_when_the_primary_has_no_endpoints() -> None:
    r = route("r", ir.WeightedBackend("a", 1, failover_to="fb"))
    empty = ir.Backend("a", backend("a").owner)
    result = Translator().translate(gateway(listener(r), backends=(empty, backend("fb"))))
    assignment = parsed(result, ENDPOINT, "failover/a/fb")
    assert [(e.priority, len(e.lb_endpoints)) for e in assignment.endpoints] == [(0, 0), (1, 1)]
    result = Translator().translate(gateway(listener(r), backends=(empty, ir.Backend("fb", backend("fb").owner))))
    assert [(e.priority, len(e.lb_endpoints)) for e in parsed(result, ENDPOINT, "failover/a/fb").endpoints] == [(0, 0)]


def test_unusable_inline_jwks_fails_its_route_alone() -> None:
    bad = ir.JwtProvider("default/bad", "iss", jwks_inline='{"keys": []}')
    result = Translator().translate(gateway(listener(route("bad", "a", auth=(bad,), path="/b"), route("good", "a", auth=(JWT_INLINE,), path="/g"))))
    (error,) = result.errors
    assert "default/bad" in error.message and "has no key Envoy can use" in error.message
    # (no /metrics: the port's routes need authentication)
    assert set(routes_of(table_of(result, "http-8080"))) == {"modelroute/health", "modelroute/ready", "good"}
    config = unpack(filters(result)["envoy.filters.http.jwt_authn"].typed_config, jwt_pb2.JwtAuthentication())
    assert list(config.providers) == ["default/gemma"]


def test_cluster_bytes_from_template_equal_a_full_build() -> None:
    from routing_engine.translate import cluster

    for b in (backend("a"), ir.Backend("modelserver/ns/ünï", backend("a").owner, (), 1234)):
        assert cluster.backend_cluster_bytes(b) == cluster.backend_cluster(b).SerializeToString(deterministic=True)
    for primary, spare in ((backend("a"), "b"), (ir.Backend("modelserver/ns/ü.nï", backend("a").owner, (), 99,
                                                            "prefixAffinity", ("x",)), "modelserver/" + "x" * 300)):
        assert (cluster.failover_cluster_bytes(primary, spare)
                == cluster.failover_cluster(primary, spare).SerializeToString(deterministic=True))


def test_assignment_bytes_equal_a_full_build() -> None:
    from routing_engine.translate import endpoint

    hosts = (ir.Endpoint("10.0.0.2", 80, healthy=False, adapters=("sql",), weight=3), ir.Endpoint("10.0.0.1", 80))
    owner = backend("a").owner
    for primary, spare in ((backend("a"), backend("b")), (ir.Backend("a", owner), backend("b")),
                           (ir.Backend("modelserver/ns/ü" + "x" * 200, owner, hosts), ir.Backend("fb", owner)),
                           (ir.Backend("a", owner, hosts), ir.Backend("b", owner, hosts[::-1]))):
        assert (endpoint.failover_assignment_bytes(primary, spare)
                == endpoint.failover_assignment(primary, spare).SerializeToString(deterministic=True))
        for one in (primary, spare):
            assert endpoint.load_assignment_bytes(one) == endpoint.load_assignment(one).SerializeToString(deterministic=True)


def test_inline_jwks_problems_are_named() -> None:
    from routing_engine.jwks import provider_problem

    def problem(jwks: str) -> str | None:
        return provider_problem(ir.JwtProvider("p", "iss", jwks_inline=jwks))

    assert problem(JWKS) is None
    assert problem('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}') is None
    assert "not a JSON object" in (problem("[1]") or "")
    assert "not a JSON object with a keys list" in (problem("{}") or "")
    assert "an RSA key needs string n and e" in (problem('{"keys": [{"kty": "RSA", "n": "abc"}]}') or "")
    assert "no host" in (provider_problem(ir.JwtProvider("p", "iss", jwks_uri="https:///x")) or "")


def test_envoy_refuses_what_provider_problem_refuses() -> None:
    """The check mirrors Envoy: the same JWKS on a listener is rejected by Envoy itself."""
    from modelroute.envoy_check import validate
    from routing_engine import engine, serialize
    from routing_engine.translate.jwt import provider_config
    from routing_engine.translate.xds import pack

    bad = ir.JwtProvider("p", "iss", jwks_inline='{"keys": [{"kty": "RSA", "n": "abc"}]}')
    result = Translator().translate(gateway(listener(route("r", "a"))))
    doc = engine.static_bootstrap(result.resources)
    config = jwt_pb2.JwtAuthentication()
    config.providers["p"].CopyFrom(provider_config(bad))
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, {"name": "envoy.filters.http.jwt_authn", "typed_config": serialize.to_dict(pack(config))})
    verdict = validate(doc)
    assert not verdict.ok and "jwks" in verdict.message.lower()
