"""`spec.extensions`: the keys plugins own. Checked against the installed plugins' models
(a bad key or value fails that ModelServer alone, naming the field and the rule), and
handed to the plugins through the IR (`ir.Route.extensions`, `ir.Listener.extensions`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoy.config.route.v3 import route_pb2
from routing_engine import engine, ir, plugins
from routing_engine.api.loader import load_manifests
from routing_engine.incremental import Translator
from routing_engine.translate.xds import ROUTE
from routing_engine.api.resources import Resource
from routing_engine.resolve import servers
from routing_engine.world import Compiled, Target, World
from tests.resolve.build import infer, ms, route, server, to, up
from tests.support.plugins import Exploding, RequestHeadersPlugin, RequestHeadersSpec
from tests.translate.builders import table_name

PLUGINS = plugins.with_builtin([RequestHeadersPlugin(), Exploding()])


def compile_(*objs: Resource, plugins_: tuple[plugins.Plugin, ...] = PLUGINS) -> Compiled:
    return engine.compile(World(objects=tuple(objs), endpoints=up("a", "b", "c")), Target(),
                          translator=Translator(plugins_))


def listener(compiled: Compiled, port: int = 8080) -> ir.Listener:
    assert compiled.gateway is not None
    (found,) = [lst for lst in compiled.gateway.listeners if lst.port == port]
    return found


def ir_route(compiled: Compiled, name: str) -> ir.Route:
    (found,) = [r for r in listener(compiled).routes if r.name == name]
    return found


def headers(value: str) -> dict:
    return {"requestHeaders": {"add": {"x-tier": value}}}


def test_the_parsed_value_reaches_the_ir_of_the_server_route_and_its_listener() -> None:
    compiled = compile_(infer("a"), server("a", "/v1/a", extensions=headers("gold")))
    assert compiled.gateway is not None
    res_route = ir_route(compiled, "modelserver/default/a")
    (found,) = res_route.extension("requestHeaders")
    assert found.server == ms("a") and found.value.add == {"x-tier": "gold"}
    assert found.canonical == '{"add":{"x-tier":"gold"}}'
    assert listener(compiled).extension("requestHeaders") == (found,)
    assert res_route.extension("other") == ()


def test_a_route_carries_the_extensions_of_every_server_it_can_reach_as_for_auth() -> None:
    compiled = compile_(
        infer("a"), infer("b"), infer("c"),
        server("a", "/v1/a", extensions=headers("gold")), server("b", "/v1/b", extensions=headers("silver")),
        server("c", "/v1/c"),
        route("split", {"path": "/v1/chat", "routes": [to("a", weight=50), to("b", weight=50)],
                        "fallback": {"modelServerRef": {"name": "c"}}}))
    group = ir_route(compiled, "modelroute/default/split/0")
    assert [(e.server, e.value.add["x-tier"]) for e in group.extensions] == [(ms("a"), "gold"), (ms("b"), "silver")]
    assert ir_route(compiled, "modelroute/default/split/fallback").extensions == ()
    # ... and the plugin turned them into Envoy config: the first server's value wins for one header
    table = route_pb2.RouteConfiguration.FromString(
        compiled.resources[ROUTE][table_name(compiled.resources, "listener/8080")].body)
    by_name = {r.name: r for r in table.virtual_hosts[0].routes}
    assert [(h.header.key, h.header.value) for h in by_name["modelroute/default/split/0"].request_headers_to_add] == [
        ("x-tier", "gold")]
    assert not by_name["modelroute/default/split/fallback"].request_headers_to_add


def _failed(compiled: Compiled, name: str) -> str:
    status = compiled.statuses[ms(name)]
    assert status.phase == "Failed"
    (accepted,) = [c for c in status.conditions if c.type == "Accepted"]
    assert accepted.status == "False" and accepted.reason == "ValidationFailed"
    return accepted.message


def test_a_bad_key_or_value_fails_that_server_alone_naming_field_and_rule() -> None:
    compiled = compile_(
        infer("a"), infer("b"), infer("c"),
        server("a", "/v1/a", extensions={"requestHeader": {"add": {"x": "1"}}}),
        server("b", "/v1/b", extensions={"requestHeaders": {"add": {"x-tier": 7}, "ad": {}}}),
        server("c", "/v1/c", extensions=headers("gold")))
    assert _failed(compiled, "a") == (
        "ModelServer default/a: spec.extensions.requestHeader: no installed plugin owns this key "
        "(did you mean requestHeaders? installed: exploding, requestHeaders)")
    assert _failed(compiled, "b") == (
        "ModelServer default/b: spec.extensions.requestHeaders.add.x-tier: 7 must be a string; "
        "ModelServer default/b: spec.extensions.requestHeaders.ad: unknown field (did you mean add?)")
    assert compiled.statuses[ms("c")].phase == "Ready"  # no outage for the others
    assert [r.name for r in listener(compiled).routes] == ["modelserver/default/c"]


def test_a_plugin_validator_failing_its_own_way_is_a_condition_not_a_traceback() -> None:
    compiled = compile_(infer("a"), server("a", "/v1/a", extensions={"exploding": {"level": 2}}))
    assert _failed(compiled, "a") == ("ModelServer default/a: spec.extensions.exploding: could not be validated by "
                                      "plugin exploding (ZeroDivisionError: a bug in the plugin)")


def test_without_the_plugin_installed_the_server_fails_closed() -> None:
    compiled = compile_(infer("a"), server("a", "/v1/a", extensions=headers("gold")), plugins_=plugins.builtin())
    assert _failed(compiled, "a") == ("ModelServer default/a: spec.extensions.requestHeaders: no installed plugin "
                                      "owns this key (no installed plugin reads spec.extensions)")
    assert compiled.gateway is not None and not compiled.gateway.listeners


def test_a_failed_server_holds_no_path_and_fixing_it_takes_the_path_back() -> None:
    older = server("a", "/v1/m", created="2024-01-01T00:00:00Z", extensions={"requestHeaders": {"add": {}}})
    younger = server("b", "/v1/m", created="2024-01-02T00:00:00Z")
    compiled = compile_(infer("a"), infer("b"), older, younger)
    assert "spec.extensions.requestHeaders.add: must have at least 1 item(s)" in _failed(compiled, "a")
    assert compiled.statuses[ms("b")].phase == "Ready"
    fixed = server("a", "/v1/m", created="2024-01-01T00:00:00Z", extensions=headers("gold"))
    compiled = compile_(infer("a"), infer("b"), fixed, younger)
    assert compiled.statuses[ms("a")].phase == "Ready" and compiled.statuses[ms("b")].phase == "Failed"


def test_an_edited_value_changes_the_output_of_a_kept_compiler_as_of_a_fresh_one() -> None:
    compiler = engine.Compiler(PLUGINS)
    objs = [infer("a"), server("a", "/v1/a", extensions=headers("gold")),
            route("r", {"path": "/v1/x", "routes": [to("a")]})]
    first = compiler.compile(World(tuple(objs), up("a")), Target())
    objs[1] = server("a", "/v1/a", extensions=headers("silver"))
    second = compiler.compile(World(tuple(objs), up("a")), Target())
    fresh = engine.compile(World(tuple(objs), up("a")), Target(), translator=Translator(PLUGINS))
    assert second.resources == fresh.resources and second.gateway == fresh.gateway
    assert first.resources[ROUTE] != second.resources[ROUTE]
    assert ir_route(second, "modelroute/default/r/0").extension("requestHeaders")[0].value.add == {"x-tier": "silver"}


def test_validate_checks_extensions_per_file_and_document_when_given_the_models(tmp_path: Path) -> None:
    manifest = tmp_path / "servers.yaml"
    manifest.write_text(
        "apiVersion: networking.matrixinfer.ai/v1alpha1\nkind: ModelServer\nmetadata: {name: a}\n"
        "spec: {modelInferRef: {name: a}, service: {port: 8080}, routing: {path: /a},"
        " extensions: {requestHeaders: {add: {X-Tier: gold}}}}\n")
    objects, errors = load_manifests([manifest])  # no models: left to the engine
    assert len(objects) == 1 and not errors
    objects, errors = load_manifests([manifest], extensions=plugins.extension_models(PLUGINS))
    assert not objects and [str(e) for e in errors] == [
        f'{manifest}#1: ModelServer default/a: spec.extensions.requestHeaders.add: header name "X-Tier" must be '
        'lower case letters, digits and "-"']


def test_a_field_marked_for_a_plugin_reaches_it_like_an_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first-class spec field marked `ForPlugin` (how a built-in per-server filter gets
    its settings, docs/adding-a-filter.md) goes through the same channel, no resolve code
    of its own. No field is marked today, so one is marked here for the test."""
    monkeypatch.setattr(servers, "PLUGIN_FIELDS", (("load_balancing", "balancer"),))
    compiled = compile_(infer("a"), server("a", "/v1/a", loadBalancing="prefixAffinity", extensions=headers("gold")),
                        infer("b"), server("b", "/v1/b"))
    assert [(e.plugin, e.value, e.canonical) for e in ir_route(compiled, "modelserver/default/a").extensions] == [
        ("balancer", "prefixAffinity", '"prefixAffinity"'), ("requestHeaders", RequestHeadersSpec(add={"x-tier": "gold"}),
                                                             '{"add":{"x-tier":"gold"}}')]
    assert ir_route(compiled, "modelserver/default/b").extensions == ()
