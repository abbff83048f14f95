"""The tables of a replaced listener, as its draining connections get them: the routes a
change touched answer 503 there, the others keep serving (modelroute/retired_routes.py)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_pb2
from modelroute.retired_routes import RetiredRoutes
from routing_engine.api.resources import Resource
from routing_engine.engine import compile as compile_world
from routing_engine.world import Compiled, EnvoyResource, Target, World
from routing_engine.translate.xds import LISTENER, ROUTE, SCOPED_ROUTE
from tests.e2e.test_jwt import AUDIENCE, ISSUER, SigningKey, jwks
from tests.resolve.build import infer, route, secret, server, to, up

KEYS = {"client": "k-1"}


def compiled(objs: Sequence[Resource]) -> Compiled:
    return compile_world(World(objects=tuple(objs), endpoints=up("open", "guarded", "many")), Target())


def answers(table: EnvoyResource) -> dict[str, str]:
    """Route name → "503" for a route failing closed, else "routed"."""
    message = route_pb2.RouteConfiguration.FromString(table.body)
    return {r.name: str(r.direct_response.status) if r.HasField("direct_response") and r.direct_response.status == 503
            else "routed" for host in message.virtual_hosts for r in host.routes}


def world(guarded: dict[str, object], *, scoped: bool = False) -> list[Resource]:
    many = [route("many", {"path": "/v1/t", "routes": [to("many", match={"path": f"/v1/t{i}/*"}) for i in range(300)]}),
            infer("many"), server("many", "/v1/models/many")] if scoped else []
    return [infer("open"), server("open", "/v1/models/open"), infer("guarded"), secret("keys", KEYS),
            server("guarded", "/v1/models/guarded", **guarded), *many]


API_KEY = {"authentication": {"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}}}


def test_a_route_gaining_an_api_key_fails_closed_on_the_replaced_listener_only() -> None:
    retired = RetiredRoutes()
    before = compiled(world({}))
    assert retired.update(None, before) == ()
    now = compiled(world(API_KEY))
    assert now.resources[LISTENER]["listener/8080"].version != before.resources[LISTENER]["listener/8080"].version
    kept = retired.update(before, now)
    [table] = [r for r in kept if r.type_url == ROUTE]
    assert table.name in before.resources[ROUTE] and table.name not in now.resources[ROUTE]
    found = answers(table)
    assert found["modelserver/default/guarded"] == "503"  # served without the key there, else
    assert found["modelserver/default/open"] == "routed"  # untouched: still served while it drains
    assert found["modelroute/health"] == "routed"
    # Kept, unchanged, while the listeners stay as they are; dropped at the next change.
    assert retired.update(now, compiled(world(API_KEY))) == kept
    later = retired.update(now, compiled(world({})))
    assert {r.name for r in later} == set(now.resources[ROUTE]) and all(r.type_url == ROUTE for r in later)


def test_a_changed_filter_fails_its_routes_closed_even_when_the_route_is_the_same() -> None:
    """A new JWT signing key (a JWKS Secret edited) changes the filter's listener
    configuration, not the route: the route still fails closed on the old listener."""
    def with_key(key: SigningKey) -> list[Resource]:
        jwt = {"authentication": {"enabled": True, "type": "jwt", "config": {
            "issuer": ISSUER, "audience": AUDIENCE, "jwksSecretName": "jwks"}}}
        return [*world(jwt), secret("jwks", {"jwks": jwks(key)})]

    retired = RetiredRoutes()
    before = compiled(with_key(SigningKey("k1")))
    retired.update(None, before)
    now = compiled(with_key(SigningKey("k2")))
    [table] = [r for r in retired.update(before, now) if r.type_url == ROUTE]
    assert answers(table)["modelserver/default/guarded"] == "503"
    assert answers(table)["modelserver/default/open"] == "routed"


def test_scoped_listeners_keep_their_scopes_and_fail_closed_in_their_tables() -> None:
    retired = RetiredRoutes()
    before = compiled(world({}, scoped=True))
    assert before.resources[SCOPED_ROUTE]
    retired.update(None, before)
    kept = retired.update(before, compiled(world(API_KEY, scoped=True)))
    scopes = {r.name for r in kept if r.type_url == SCOPED_ROUTE}
    assert scopes == set(before.resources[SCOPED_ROUTE])  # every scope of the replaced listener
    found: dict[str, str] = {}
    for table in (r for r in kept if r.type_url == ROUTE):
        found.update(answers(table))
    assert found["modelserver/default/guarded"] == "503"
    assert found["modelserver/default/open"] == "routed" and found["modelroute/default/many/0"] == "routed"


def test_an_unchanged_listener_keeps_nothing() -> None:
    retired = RetiredRoutes()
    before = compiled(world({}))
    retired.update(None, before)
    assert retired.update(before, compiled(world({"routing": {"path": "/v1/models/guarded", "timeout": "30s"}}))) == ()


def test_a_rate_limit_fails_closed_where_it_applies() -> None:
    """A local limit's buckets are keyed by cluster in the listener's filter: only the
    routes to that cluster fail closed; a shared limit's filter applies to every request
    of the listener: every route does."""
    limit = {"enabled": True, "requestsPerSecond": 1, "burstSize": 1}
    for extra, expected in [({}, {"modelserver/default/guarded": "503", "modelserver/default/open": "routed"}),
                            ({"global": True}, {"modelserver/default/guarded": "503", "modelserver/default/open": "503"})]:
        retired = RetiredRoutes()
        before = compiled(world({}))
        retired.update(None, before)
        [table] = [r for r in retired.update(before, compiled(world({"rateLimit": {**limit, **extra}})))
                   if r.type_url == ROUTE]
        found = answers(table)
        assert {k: found[k] for k in expected} == expected, extra
