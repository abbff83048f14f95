"""The plugin interface: ranks, order, discovery through entry points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from importlib import metadata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envoy.extensions.filters.http.set_metadata.v3 import set_metadata_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from routing_engine import ir
from routing_engine import plugins as plugin
from routing_engine.incremental import Translator
from routing_engine.translate.listener import build_listener
from routing_engine.plugins import RANKS, HttpFilter, Plugin, PluginError, builtin
from routing_engine.translate.xds import LISTENER, pack
from tests.translate.builders import gateway, hcm_of, listener, parsed, route, table_of


class Tagger(Plugin):
    """A third-party style plugin: sets metadata between auth and rate limiting."""

    name = "tagger"
    rank = 400

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        return [HttpFilter(name="envoy.filters.http.set_metadata", typed_config=pack(set_metadata_pb2.Config()))]

    def patch_hcm(self, listener: ir.Listener, hcm: hcm_pb2.HttpConnectionManager) -> None:
        hcm.server_name = f"modelroute-{listener.port}"


class Unranked(Plugin):
    name = "unranked"


def test_every_builtin_plugin_has_a_rank_from_the_table() -> None:
    plugins = plugin.builtin()
    assert plugins, "no built-in plugins"
    for p in plugins:
        assert isinstance(p.rank, int), p
        assert RANKS[p.name] == p.rank
    assert [p.rank for p in plugins] == sorted(p.rank for p in plugins)


def test_unranked_plugin_is_refused() -> None:
    with pytest.raises(PluginError, match="unranked.*rank"):
        Translator(plugins=[*plugin.builtin(), Unranked()])


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(PluginError, match="two plugins"):
        plugin.ordered([Tagger(), Tagger()])


def test_ties_break_by_name() -> None:
    a, b = Tagger(), Tagger()
    a.name, b.name = "zeta", "alpha"
    assert [p.name for p in plugin.ordered([a, b])] == ["alpha", "zeta"]


def test_third_party_filter_lands_at_its_rank() -> None:
    translator = Translator(plugins=plugin.with_builtin([Tagger()]))
    result = translator.translate(gateway(listener(route("r", "a", auth=(ir.ApiKeyAuth("k", "x-api-key", ("s",)),)), rate_limits=(("a", ir.RateLimit(1, 1)),))))
    hcm = hcm_of(parsed(result, LISTENER, "http-8080"))
    assert hcm.server_name == "modelroute-8080"
    names = [f.name for f in hcm.http_filters]
    assert names.index("envoy.filters.http.api_key_auth") < names.index("envoy.filters.http.set_metadata")
    assert names.index("envoy.filters.http.set_metadata") < names.index("envoy.filters.http.local_ratelimit")


def test_discover_loads_entry_points_of_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake_entry_points(*, group: str) -> list[metadata.EntryPoint]:
        seen.append(group)
        return [metadata.EntryPoint(name="tagger", value=f"{__name__}:Tagger", group=group)]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    (found,) = plugin.discover()
    assert isinstance(found, Tagger)
    assert seen == ["modelroute.plugins"]


def test_discover_refuses_non_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        metadata, "entry_points", lambda *, group: [metadata.EntryPoint(name="bad", value="os:getcwd", group=group)]
    )
    with pytest.raises(PluginError, match="bad"):
        plugin.discover()


class Faulty(Plugin):
    """A plugin with bugs: its listener hook fails on port 9000, its route hook on route
    "boom", its extra resources always."""

    name = "faulty"
    rank = 450

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        if listener.port == 9000:
            raise KeyError("no such thing")
        return ()

    def patch_route(self, route: ir.Route, proto) -> None:  # type: ignore[no-untyped-def]
        if route.name == "boom":
            raise ZeroDivisionError("division by zero")

    def extra_resources(self, gateway: ir.Gateway):  # type: ignore[no-untyped-def]
        raise RuntimeError("cannot")


def test_a_failing_plugin_hook_fails_only_what_it_touches_and_never_raises() -> None:
    result = Translator(plugin.with_builtin([Faulty()])).translate(gateway(
        listener(route("ok", "a", path="/ok"), route("boom", "a", path="/boom")),
        listener(route("other", "a", path="/other"), name="http-9000", port=9000)))
    assert set(result.resources[LISTENER]) == {"http-8080"}  # port 9000 fails closed, alone
    routes = {r.name for r in table_of(result, "http-8080").virtual_hosts[0].routes}
    assert "ok" in routes and "boom" not in routes
    messages = sorted(e.message for e in result.errors)
    assert any("route boom: translation failed (ZeroDivisionError" in m for m in messages)
    assert any("listener http-9000: translation failed (KeyError" in m and "listener left out" in m for m in messages)
    assert any("plugin faulty: translation failed (RuntimeError: cannot)" in m for m in messages)


# --- listener facets: what a plugin's listener hooks read of a route ---------------------

_JWT = ir.JwtProvider("default/a", "https://issuer", ("aud",), jwks_uri="https://keys.example/jwks")
_KEY = ir.ApiKeyAuth("default/b", "x-api-key", ("k1",))
_ROUTES = st.builds(
    lambda n, backend, failover, weight, auth, model, timeout, path: route(
        f"r{n}", ir.WeightedBackend(backend, weight, failover_to=failover), path=path, timeout_ms=timeout,
        auth=auth, match=ir.RouteMatch(ir.PathMatch("segment_prefix", path), model=model)),
    st.integers(0, 3), st.sampled_from(["a", "b", "c"]), st.sampled_from([None, "c"]), st.integers(1, 100),
    st.sampled_from([(), (_JWT,), (_KEY,), (_JWT, _KEY)]), st.sampled_from([None, "m"]),
    st.sampled_from([1_000, 60_000]), st.sampled_from(["/v1", "/v2/x"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(_ROUTES, min_size=1, max_size=5), st.data())
def test_routes_with_equal_facets_give_the_same_listener(routes: list[ir.Route], data: st.DataObject) -> None:
    """The translator keeps a listener, its plugin routes and the plugins' resources
    after a route edit (same name and owner) when every plugin's `listener_facet` of that
    route is unchanged: that must mean the same listener, routes and resources."""
    plugins = builtin()
    limits = (("a", ir.RateLimit(5, 5)), ("c", ir.RateLimit(1, 1, shared=True)))
    position = data.draw(st.integers(0, len(routes) - 1))
    edited = list(routes)
    kept = routes[position]
    other = replace(data.draw(_ROUTES), name=kept.name, owner=kept.owner)
    if data.draw(st.booleans()):  # keep what the facets are about, change everything else
        other = replace(other, auth=kept.auth, match=replace(other.match, model=kept.match.model, path=kept.match.path),
                        backends=tuple(replace(b, backend=kept.backends[0].backend, failover_to=kept.backends[0].failover_to)
                                       if kept.backends[0].failover_to else b for b in other.backends))
    edited[position] = other
    for p in plugins:  # each plugin's facet covers what that plugin's hooks read
        if p.listener_facet(edited[position]) != p.listener_facet(routes[position]):
            continue
        for fields in ({}, {"rate_limits": limits, "ready_backends": ("a",)}):
            lst_before, lst_after = listener(*routes, **fields), listener(*edited, **fields)
            before, _ = build_listener(lst_before, [p])
            after, _ = build_listener(lst_after, [p])
            assert before == after, p.name
            assert list(p.extra_routes(lst_before)) == list(p.extra_routes(lst_after)), p.name
            assert list(p.extra_resources(gateway(lst_before))) == list(p.extra_resources(gateway(lst_after))), p.name
