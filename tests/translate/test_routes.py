"""Route driver: matches, weights, timeouts, retries, RouteConfiguration assembly."""

from __future__ import annotations

import re

import pytest

from routing_engine import ir
from routing_engine.incremental import Translator
from routing_engine.translate import route
from routing_engine.translate.xds import ROUTE
from tests.translate.builders import backend, gateway, listener, route_key, routes_of, table_name, table_of
from tests.translate.builders import route as make_route


def only_route(r: ir.Route):  # type: ignore[no-untyped-def]
    result = Translator().translate(gateway(listener(r)))
    assert not result.errors
    return routes_of(table_of(result, "http-8080"))[r.name]


def test_segment_prefix_uses_path_separated_prefix_without_trailing_slash() -> None:
    proto = only_route(make_route("r", "a", path="/v1/models/a/"))
    assert proto.match.path_separated_prefix == "/v1/models/a"


def test_root_segment_prefix_is_a_plain_prefix() -> None:
    assert only_route(make_route("r", "a", path="/")).match.prefix == "/"


def test_exact_path() -> None:
    proto = only_route(make_route("r", "a", path="/v1/chat", kind="exact"))
    assert proto.match.path == "/v1/chat"
    assert proto.match.WhichOneof("path_specifier") == "path"


@pytest.mark.parametrize(
    ("glob", "matching", "not_matching"),
    [
        ("/v1/*/infer", "/v1/llama/infer", "/v1/a/b/infer"),
        ("/v1/models/a.b*", "/v1/models/a.b-7", "/v1/models/aXb"),
        ("/x/(y)+/*", "/x/(y)+/z", "/x/yy/z"),
    ],
)
def test_glob_star_stays_inside_one_segment(glob: str, matching: str, not_matching: str) -> None:
    regex = route.glob_regex(glob)
    assert re.fullmatch(regex, matching)
    assert not re.fullmatch(regex, not_matching)
    assert only_route(make_route("r", "a", path=glob, kind="glob")).match.safe_regex.regex == regex


def test_header_and_query_matchers() -> None:
    match = ir.RouteMatch(
        path=ir.PathMatch("segment_prefix", "/v1"),
        headers=(("x-tier", ir.StringMatch("exact", "gold")), ("x-exp", ir.StringMatch("present"))),
        query_params=(("v", ir.StringMatch("regex", "2.*")), ("p", ir.StringMatch("prefix", "ab"))),
    )
    proto = only_route(make_route("r", "a", match=match))
    headers = {h.name: h for h in proto.match.headers}
    assert headers["x-tier"].string_match.exact == "gold"
    assert headers["x-exp"].present_match
    params = {q.name: q for q in proto.match.query_parameters}
    assert params["v"].string_match.safe_regex.regex == "2.*"
    assert params["p"].string_match.prefix == "ab"


def test_model_match_reads_dynamic_metadata() -> None:
    match = ir.RouteMatch(path=ir.PathMatch("segment_prefix", "/v1"), model="llama-3")
    (matcher,) = only_route(make_route("r", "a", match=match)).match.dynamic_metadata
    assert matcher.filter == "modelroute"
    assert [p.key for p in matcher.path] == ["model"]
    assert matcher.value.string_match.exact == "llama-3"


def test_single_backend_is_a_plain_cluster() -> None:
    proto = only_route(make_route("r", "a"))
    assert proto.route.cluster == "a"
    assert not proto.route.HasField("weighted_clusters")


def test_weights_are_reduced_exactly_and_zero_weights_kept() -> None:
    r = make_route("r", ir.WeightedBackend("a", 60), ir.WeightedBackend("b", 40), ir.WeightedBackend("c", 0))
    clusters = only_route(r).route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in clusters] == [("a", 3), ("b", 2), ("c", 0)]


def test_all_zero_weights_become_equal_shares() -> None:
    assert route.normalized_weights([ir.WeightedBackend("a", 0), ir.WeightedBackend("b", 0)]) == [1, 1]


def test_failover_destination_is_the_pairs_cluster() -> None:
    r = make_route("r", ir.WeightedBackend("a", 1, failover_to="fb"), ir.WeightedBackend("b", 1, failover_to="fb"))
    names = [c.name for c in only_route(r).route.weighted_clusters.clusters]
    assert names == ["failover/a/fb", "failover/b/fb"]


def test_timeout_caps_silence_not_the_whole_answer_and_retries_are_safe() -> None:
    proto = only_route(make_route("r", "a", timeout_ms=1500, retries=3))
    assert proto.route.HasField("timeout") and proto.route.timeout.ToMilliseconds() == 0  # 0 = off, not Envoy's 15 s
    policy = proto.route.retry_policy
    assert policy.per_try_idle_timeout.ToMilliseconds() == 1500
    assert proto.route.idle_timeout.ToMilliseconds() == 1500 + route.STALL_MARGIN_MS
    assert set(policy.retry_on.split(",")) == {"connect-failure", "refused-stream", "reset-before-request", "retriable-status-codes"}
    assert "5xx" not in policy.retry_on and "gateway-error" not in policy.retry_on
    assert list(policy.retriable_status_codes) == [503]
    assert policy.num_retries.value == 3


def test_no_retries_means_a_policy_that_only_watches_for_silence() -> None:
    policy = only_route(make_route("r", "a", retries=0, timeout_ms=2000)).route.retry_policy
    assert (policy.retry_on, policy.num_retries.value, policy.per_try_idle_timeout.ToMilliseconds()) == ("", 0, 2000)


def test_route_order_is_kept_after_the_health_routes() -> None:
    routes = (make_route("z", "a", path="/z"), make_route("a", "a", path="/a"), make_route("m", "a", path="/m"))
    result = Translator().translate(gateway(listener(*routes)))
    (vhost,) = table_of(result, "http-8080").virtual_hosts
    assert [r.name for r in vhost.routes] == ["modelroute/health", "modelroute/ready", "modelroute/metrics", "z", "a", "m"]
    assert list(vhost.domains) == ["*"]


def test_assembled_route_config_equals_deterministic_serialization() -> None:
    translator = Translator()
    routes = (
        make_route("r1", ir.WeightedBackend("a", 1), ir.WeightedBackend("b", 2), retries=1),
        make_route("r2", "a", auth=(ir.ApiKeyAuth("k", "x-api-key", ("s",)),), path="/x"),
    )
    result = translator.translate(gateway(listener(*routes)))
    extra = [m for p in translator.plugins for m in p.extra_routes(listener(*routes))]
    name = table_name(result.resources, "http-8080")
    expected = route.route_config(name, [*extra, *(translator.route_message(r) for r in routes)])
    assert result.resources[ROUTE][name].body == expected.SerializeToString(deterministic=True)


def test_route_to_missing_backend_is_left_out_alone() -> None:
    good = make_route("good", "a", path="/good")
    bad = make_route("bad", "ghost", path="/bad", owner=route_key("broken"))
    result = Translator().translate(gateway(listener(good, bad), backends=(backend("a"),)))
    assert set(routes_of(table_of(result, "http-8080"))) == {"modelroute/health", "modelroute/ready", "modelroute/metrics", "good"}
    (error,) = result.errors
    assert error.owner == route_key("broken")
    assert "ghost" in error.message and "bad" in error.message


def test_retries_go_to_another_replica() -> None:
    policy = only_route(make_route("r", "a", retries=2)).route.retry_policy
    assert [p.name for p in policy.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]
    assert policy.host_selection_retry_max_attempts == 3
