"""Issue #18 in resolve: LoRA adapter routes in front of every route that reaches a
ModelInfer declaring adapters, endpoints carrying the declared adapters they load, load
weights only behind loadAware servers, and the prefix hash on prefixAffinity routes."""

from __future__ import annotations

from typing import Any

from routing_engine import ir
from routing_engine.api.resources import KIND_BY_NAME, ObjectKey, Resource
from routing_engine.incremental import Resolver
from routing_engine.resolve.inference import Expander, expand, special_backends
from routing_engine.world import BackendEndpoint, Target, World
from tests.resolve.build import ir_route, listener, route, route_names, run, server, to

WORKLOAD = "workload.matrixinfer.ai/v1alpha1"


def infer(name: str, adapters: tuple[str, ...] = ()) -> Resource:
    spec: dict[str, Any] = {"modelRef": {"name": "m"}}
    if adapters:
        spec["adapters"] = [{"name": a} for a in adapters]
    return KIND_BY_NAME["ModelInfer"].model_validate(
        {"apiVersion": WORKLOAD, "kind": "ModelInfer", "metadata": {"name": name}, "spec": spec})


def endpoint(address: str, adapters: tuple[str, ...] | None = None, weight: int | None = None) -> BackendEndpoint:
    return BackendEndpoint(address, 8000, True, adapters, weight)


def key(name: str) -> ObjectKey:
    return ObjectKey("ModelInfer", "default", name)


WORLD = [
    infer("lora", ("sql", "chat")), infer("plain"), infer("other", ("sql",)),
    server("lora", "/v1/models/lora"), server("plain", "/v1/models/plain"), server("other", "/v1/models/other"),
]


def test_a_server_route_gets_one_route_per_adapter_in_front_of_it() -> None:
    res = run(WORLD)
    names = route_names(res, 8080)
    at = names.index("modelserver/default/lora")
    assert names[at - 2: at] == ["modelserver/default/lora/adapter/chat", "modelserver/default/lora/adapter/sql"]
    sql = ir_route(res, "modelserver/default/lora/adapter/sql")
    base = ir_route(res, "modelserver/default/lora")
    assert sql.match == ir.RouteMatch(base.match.path, model="sql")
    assert (sql.adapter, sql.derived_from, sql.backends) == ("sql", base.name, base.backends)
    assert (sql.timeout_ms, sql.retries, sql.auth) == (base.timeout_ms, base.retries, base.auth)
    assert base.adapter is None and not any(n.startswith("modelserver/default/plain/") for n in names)


def test_a_split_narrows_to_the_destinations_declaring_the_adapter() -> None:
    split = route("split", {"path": "/v1", "fallback": {"modelServerRef": {"name": "other"}}, "routes": [
        to("lora", weight=70), to("plain", weight=30)]})
    res = run([*WORLD, split])
    group = ir_route(res, "modelroute/default/split/0")
    chat = ir_route(res, "modelroute/default/split/0/adapter/chat")
    sql = ir_route(res, "modelroute/default/split/0/adapter/sql")
    assert [(b.backend, b.weight) for b in group.backends] == [("modelserver/default/lora", 70),
                                                               ("modelserver/default/plain", 30)]
    # only lora declares chat, and the fallback (other) does not: no failover for it
    assert chat.backends == (ir.WeightedBackend("modelserver/default/lora", 70, None),)
    # other declares sql: lora keeps failing over to it
    assert sql.backends == (ir.WeightedBackend("modelserver/default/lora", 70, "modelserver/default/other"),)
    fallback = ir_route(res, "modelroute/default/split/fallback/adapter/sql")  # the catch-all reaches other
    assert fallback.adapter == "sql"


def test_a_route_matching_an_adapter_by_model_is_narrowed_in_place() -> None:
    pinned = route("pinned", {"path": "/v1", "routes": [
        {**to("lora", weight=50), "match": {"model": "chat"}}, {**to("plain", weight=50), "match": {"model": "chat"}},
        {**to("lora"), "match": {"model": "base-model"}}]})
    res = run([*WORLD, pinned])
    chat = ir_route(res, "modelroute/default/pinned/0")
    assert chat.adapter == "chat" and [b.backend for b in chat.backends] == ["modelserver/default/lora"]
    assert not any(n.startswith("modelroute/default/pinned/0/") for n in route_names(res, 8080))
    base = ir_route(res, "modelroute/default/pinned/1")
    assert base.adapter is None  # a model name that is no adapter: all replicas


def test_endpoints_keep_declared_loaded_adapters_and_weights_only_when_load_aware() -> None:
    endpoints = {key("lora"): (endpoint("10.0.0.1", ("sql", "chat", "extra"), 3), endpoint("10.0.0.2"),
                               endpoint("10.0.0.3", ())),
                 key("plain"): (endpoint("10.0.1.1", ("sql",), 7),)}
    aware = server("plain", "/v1/models/plain", loadBalancing="loadAware")
    res = run([*WORLD[:4], aware, WORLD[5]], endpoints=endpoints)
    backends = {b.name: b for b in res.gateway.backends}
    lora = backends["modelserver/default/lora"]
    assert lora.adapters == ("chat", "sql") and lora.load_balancing == "leastRequest"
    assert [(e.address, e.adapters, e.weight) for e in lora.endpoints] == [
        ("10.0.0.1", ("chat", "sql"), None), ("10.0.0.2", (), None), ("10.0.0.3", (), None)]
    plain = backends["modelserver/default/plain"]
    assert plain.load_balancing == "loadAware" and [(e.adapters, e.weight) for e in plain.endpoints] == [((), 7)]


def test_prefix_affinity_marks_the_routes_that_reach_it_except_a_sticky_canary() -> None:
    prefix = server("plain", "/v1/models/plain", loadBalancing="prefixAffinity")
    canary = route("canary", {"path": "/v1/c", "routes": [to("lora"), to("plain")],
                              "canary": {"enabled": True, "stickyHeader": "x-user"}})
    plain_route = route("to-plain", {"path": "/v1/p", "routes": [to("plain")]})
    res = run([*WORLD[:4], prefix, WORLD[5], canary, plain_route])
    assert ir_route(res, "modelserver/default/plain").prefix_hash
    assert ir_route(res, "modelroute/default/to-plain/0").prefix_hash
    assert not ir_route(res, "modelroute/default/canary/0").prefix_hash
    assert not ir_route(res, "modelserver/default/lora").prefix_hash
    assert ir_route(res, "modelroute/default/canary/0/adapter/sql").hash_header == "x-user"


def test_expansion_is_memoized_by_route_identity_and_backend_facts() -> None:
    res = run(WORLD)
    backends = {b.name: b for b in res.gateway.backends}
    special = special_backends(res.gateway.backends)
    base = ir_route(res, "modelserver/default/lora")
    expander = Expander()
    first = expander.routes([base], backends, special)
    expander.end_round()
    again = expander.routes([base], backends, special)
    assert all(a is b for a, b in zip(first, again, strict=True))
    changed = {**backends, base.backends[0].backend: ir.Backend(base.backends[0].backend, base.owner, (),
                                                                adapters=("sql",))}
    assert [r.name for r in expander.routes([base], changed, special)] == [
        "modelserver/default/lora/adapter/sql", "modelserver/default/lora"]
    plain = ir_route(res, "modelserver/default/plain")
    assert expand(plain, backends) == (plain,) and expander.routes([plain], backends, frozenset()) == (plain,)


def test_an_endpoint_change_keeps_unrelated_route_objects() -> None:
    resolver = Resolver()
    before = resolver.resolve(World(tuple(WORLD), {key("lora"): (endpoint("10.0.0.1", ("sql",)),)}), Target())
    after = resolver.resolve(World(tuple(WORLD), {key("lora"): (endpoint("10.0.0.1", ("sql", "chat")),)}), Target())
    old, new = listener(before, 8080).routes, listener(after, 8080).routes
    assert old == new  # adapters on endpoints change EDS only
    untouched = [(a, b) for a, b in zip(old, new, strict=True) if a.name.startswith("modelserver/default/other")]
    assert len(untouched) == 2 and all(a is b for a, b in untouched)  # another server's routes: the same objects
