"""Sidecar scope (SPEC 3.6): only in-scope servers, ModelRoutes only when everything they
need is in scope, no statuses for the rest, claims decided world-wide."""

from __future__ import annotations

from routing_engine.api.resources import Resource

from routing_engine.world import Target
from tests.resolve.build import mr, ms, route, route_names, run, server, to

SIDE = dict(role="sidecar")


def world() -> list[Resource]:
    return [
        server("a", "/v1/a", 8080, namespace="team"),
        server("b", "/v1/b", 9090, namespace="team"),
        server("x", "/v1/x", 7070, namespace="other"),
        route("ab", {"path": "/v1/a/chat", "routes": [to("a"), to("b")]}, namespace="team"),
        route("ax", {"path": "/v1/a/mixed", "routes": [to("a"), to("x", "other")]}, namespace="team"),
    ]


def test_namespace_scope_limits_servers_routes_and_statuses() -> None:
    res = run(world(), Target(role="sidecar", namespaces=frozenset({"team"})))
    assert [l.port for l in res.gateway.listeners] == [8080, 9090]
    assert all(l.address == "127.0.0.1" for l in res.gateway.listeners)
    assert [b.name for b in res.gateway.backends] == ["modelserver/team/a", "modelserver/team/b"]
    assert route_names(res, 8080) == ["modelroute/team/ab/0", "modelserver/team/a"]
    assert set(res.statuses) == {ms("a", "team"), ms("b", "team"), mr("ab", "team")}


def test_server_scope_drops_routes_referencing_other_servers() -> None:
    res = run(world(), Target(role="sidecar", servers=frozenset({ms("a", "team")})))
    assert route_names(res, 8080) == ["modelserver/team/a"]
    assert set(res.statuses) == {ms("a", "team")}


def test_route_needs_its_front_door_owner_in_scope() -> None:
    objs = [server("owner", "/v1/o", 8080), server("d", "/v1/d", 9090), route("r", {"path": "/v1/o/x", "routes": [to("d")]})]
    assert route_names(run(objs), 8080)[0] == "modelroute/default/r/0"
    res = run(objs, Target(role="sidecar", servers=frozenset({ms("d")})))
    assert route_names(res, 9090) == ["modelserver/default/d"]
    assert mr("r") not in res.statuses


def test_claims_are_decided_world_wide_before_scoping() -> None:
    objs = [server("old", "/x", 8080, namespace="a", created="2024-01-01T00:00:00Z"),
            server("young", "/x", 8080, namespace="b", created="2024-02-01T00:00:00Z")]
    res = run(objs, Target(role="sidecar", namespaces=frozenset({"b"})))
    assert res.gateway.listeners == () and res.gateway.backends == ()
    assert res.statuses[ms("young", "b")].phase == "Failed"


def test_unscoped_sidecar_equals_gateway_except_address() -> None:
    gateway = run(world())
    sidecar = run(world(), Target(role="sidecar"))
    assert [l.routes for l in gateway.gateway.listeners] == [l.routes for l in sidecar.gateway.listeners]
    assert gateway.gateway.backends == sidecar.gateway.backends
