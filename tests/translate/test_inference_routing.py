"""Issue #18 in translate: the cluster of each load-balancing choice (and of a backend
with LoRA adapters), endpoint metadata and weights, adapter routes' `metadata_match`,
the prefix hash (route hash policy + the Lua filter that sets its header), and model
listings around derived adapter routes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from routing_engine import ir
from routing_engine.translate import cluster, endpoint
from routing_engine.translate.models_list import ModelsListPlugin
from routing_engine.plugins import RANKS, builtin
from routing_engine.translate.prefix_affinity import PREFIX_BYTES, PREFIX_HASH_FILTER, PrefixAffinityPlugin
from routing_engine.translate.route import PREFIX_HASH_HEADER, build_route
from routing_engine.incremental import Translator
from routing_engine.translate.xds import CLUSTER, ENDPOINT
from tests.translate.builders import backend, gateway, listener, parsed, route, table_of
from tests.translate.test_features import filters, unpack

SHAPES = [(lb, adapters) for lb in ("leastRequest", "loadAware", "prefixAffinity") for adapters in ((), ("sql",))]


@pytest.mark.parametrize(("load_balancing", "adapters"), SHAPES)
def test_cluster_bytes_from_template_equal_a_full_build(load_balancing: str, adapters: tuple[str, ...]) -> None:
    for name in ("modelserver/default/a", "modelserver/ns/a.b"):
        b = ir.Backend(name, backend("a").owner, (), 1234, load_balancing, adapters)  # type: ignore[arg-type]
        assert cluster.backend_cluster_bytes(b) == cluster.backend_cluster(b).SerializeToString(deterministic=True)


def test_least_request_and_load_aware_clusters_are_plain_least_request() -> None:
    plain = cluster.backend_cluster(backend("a"))
    aware = cluster.backend_cluster(replace(backend("a"), load_balancing="loadAware"))
    assert plain == aware and plain.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert not plain.HasField("lb_subset_config") and not plain.HasField("common_lb_config")


def test_prefix_affinity_is_maglev_with_a_load_bound() -> None:
    proto = cluster.backend_cluster(replace(backend("a"), load_balancing="prefixAffinity"))
    assert proto.lb_policy == cluster_pb2.Cluster.MAGLEV
    assert proto.common_lb_config.consistent_hashing_lb_config.hash_balance_factor.value == 150


def test_adapters_give_a_subset_load_balancer_without_fallback_for_an_adapter() -> None:
    proto = cluster.backend_cluster(replace(backend("a"), adapters=("sql",)))
    subsets = proto.lb_subset_config
    assert subsets.fallback_policy == cluster_pb2.Cluster.LbSubsetConfig.ANY_ENDPOINT and subsets.list_as_any
    (selector,) = subsets.subset_selectors
    assert list(selector.keys) == ["lora_adapter"]
    assert selector.fallback_policy == cluster_pb2.Cluster.LbSubsetConfig.LbSubsetSelector.NO_FALLBACK


def test_endpoints_carry_their_adapters_and_weights() -> None:
    b = ir.Backend("b", backend("b").owner, (ir.Endpoint("10.0.0.1", 80, adapters=("chat", "sql"), weight=3),
                                            ir.Endpoint("10.0.0.2", 80), ir.Endpoint("10.0.0.3", 80, weight=0)))
    first, second, third = endpoint.load_assignment(b).endpoints[0].lb_endpoints
    values = first.metadata.filter_metadata["envoy.lb"].fields["lora_adapter"].list_value.values
    assert [v.string_value for v in values] == ["chat", "sql"] and first.load_balancing_weight.value == 3
    assert not second.HasField("metadata") and not second.HasField("load_balancing_weight")
    assert third.load_balancing_weight.value == 1  # Envoy refuses 0


def test_adapter_routes_match_the_subset_and_prefix_routes_hash_the_prompt() -> None:
    adapter = build_route(route("r", "a", adapter="sql"))
    assert adapter.route.metadata_match.filter_metadata["envoy.lb"].fields["lora_adapter"].string_value == "sql"
    prefix = build_route(route("p", "a", prefix_hash=True))
    assert [h.header.header_name for h in prefix.route.hash_policy] == [PREFIX_HASH_HEADER]
    sticky = build_route(route("s", ir.WeightedBackend("a", 90), ir.WeightedBackend("b", 10), hash_header="x-user",
                               prefix_hash=True))
    assert [h.header.header_name for h in sticky.route.hash_policy] == ["x-user"]  # the variant's hash alone
    assert not build_route(route("plain", "a")).route.HasField("metadata_match")


def test_the_prefix_filter_is_on_listeners_with_prefix_routes_only_and_after_rate_limits() -> None:
    assert RANKS["ratelimit"] < RANKS["prefix_affinity"]
    assert "prefix_affinity" in [p.name for p in builtin()]
    with_prefix = listener(route("p", "a", prefix_hash=True), route("q", "a", path="/q"))
    result = Translator().translate(gateway(with_prefix, listener(route("x", "a"), name="http-9090", port=9090)))
    found = filters(result)
    assert PREFIX_HASH_FILTER in found and list(found)[-1] == "envoy.filters.http.router"
    lua = unpack(found[PREFIX_HASH_FILTER].typed_config, lua_pb2.Lua()).default_source_code.inline_string
    assert lua.index(f'remove(HEADER)') < lua.index("metadata()")  # a client's header is dropped first
    assert PREFIX_HASH_FILTER not in filters(result, "http-9090")
    routes = {r.name: r for r in table_of(result, "http-8080").virtual_hosts[0].routes}
    assert routes["p"].metadata.filter_metadata[PREFIX_HASH_FILTER].fields["prefix_bytes"].number_value == PREFIX_BYTES
    assert PREFIX_HASH_FILTER not in routes["q"].metadata.filter_metadata
    assert PrefixAffinityPlugin().http_filters(listener(route("x", "a"))) == ()


def test_derived_adapter_routes_join_listings_but_never_open_one() -> None:
    path = ir.RouteMatch(ir.PathMatch("segment_prefix", "/v1"))
    derived = route("s/adapter/sql", "a", match=replace(path, model="sql"), adapter="sql", derived_from="s")
    alone = ir.Listener("l", "0.0.0.0", 8080, (derived, route("s", "a", match=path)))
    assert ModelsListPlugin().extra_routes(alone) == []  # the server's replicas list their adapters themselves
    user = route("u", "a", match=replace(path, model="llama"))
    (listing,) = ModelsListPlugin().extra_routes(ir.Listener("l", "0.0.0.0", 8080, (user, derived)))
    assert [m["id"] for m in json.loads(listing.direct_response.body.inline_string)["data"]] == ["llama", "sql"]


def test_translate_sends_weights_and_adapters_by_eds_only() -> None:
    b = ir.Backend("a", backend("a").owner, (ir.Endpoint("10.0.0.1", 80, adapters=("sql",), weight=5),),
                   adapters=("sql",))
    result = Translator().translate(gateway(listener(route("r", "a")), backends=(b,)))
    assert parsed(result, CLUSTER, "a").lb_subset_config.list_as_any
    assert parsed(result, ENDPOINT, "a").endpoints[0].lb_endpoints[0].load_balancing_weight.value == 5
