"""Determinism, content versions, owners and memoization of the Translator."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from routing_engine import ir
from routing_engine.incremental import Translator
from routing_engine.translate import TranslateResult, translate
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET
from tests.translate.builders import JWKS, backend, gateway, listener, route, routes_of, server_key, table_name, table_of

CERT = ir.TlsCertificate("default/cert", b"chain", b"key")


def world(n_routes: int = 20, *, timeout_of_r3: int = 60_000) -> ir.Gateway:
    routes = tuple(
        route(f"r{i}", ir.WeightedBackend(f"s{i % 5}", 3), ir.WeightedBackend(f"s{(i + 1) % 5}", 1, failover_to="s0"),
              path=f"/v1/m{i}", timeout_ms=timeout_of_r3 if i == 3 else 60_000,
              auth=(ir.JwtProvider("p", "iss", jwks_inline=JWKS),) if i % 4 == 0 else ())
        for i in range(n_routes)
    )
    return gateway(
        listener(*routes, ready_backends=("s0",), rate_limits=(("s1", ir.RateLimit(3, 3)),)),
        listener(route("x", "s4", path="/x"), name="https-8443", port=8443, tls=CERT),
    )


def test_same_ir_gives_byte_identical_resources_across_translators() -> None:
    first, second = translate(world()), translate(world())
    assert first.resources == second.resources
    for by_name in first.resources.values():
        for resource in by_name.values():
            assert resource.version == hashlib.sha256(resource.body).hexdigest()[:16]


def changed_between(before: TranslateResult, after: TranslateResult) -> set[tuple[str, str]]:
    """(type, name) of every resource of `after` whose version differs from `before`'s."""
    return {(t, n) for t, by_name in after.resources.items() for n, r in by_name.items()
            if before.resources[t][n].version != r.version}


def replica_moved(gw: ir.Gateway, backend_name: str) -> ir.Gateway:
    """`gw` with the replicas of one backend replaced by another."""
    return replace(gw, backends=tuple(replace(b, endpoints=(ir.Endpoint("10.9.9.9", 80),)) if b.name == backend_name
                                      else b for b in gw.backends))


def test_every_type_present_and_sorted_by_name() -> None:
    result = translate(world())
    assert set(result.resources) == {LISTENER, SCOPED_ROUTE, ROUTE, CLUSTER, ENDPOINT, SECRET}
    assert result.resources[SCOPED_ROUTE] == {}  # small listeners keep one table
    for by_name in result.resources.values():
        assert list(by_name) == sorted(by_name)
    assert set(result.resources[ROUTE]) == {table_name(result.resources, n) for n in ("http-8080", "https-8443")}
    failovers = {f"failover/s{i}/s0" for i in range(1, 5)}
    assert set(result.resources[ENDPOINT]) == {f"s{i}" for i in range(5)} | failovers
    assert set(result.resources[CLUSTER]) == {f"s{i}" for i in range(5)} | failovers


def test_owners_name_the_objects_behind_each_resource() -> None:
    result = translate(world(4))
    assert result.owners[(CLUSTER, "s2")] == (server_key("s2"),)
    assert result.owners[(ENDPOINT, "s2")] == (server_key("s2"),)
    assert len(result.owners[(ROUTE, table_name(result.resources, "http-8080"))]) == 4
    assert result.owners[(SECRET, "default/cert")] == result.owners[(LISTENER, "https-8443")]
    for type_url, by_name in result.resources.items():
        for name in by_name:
            assert result.owners[(type_url, name)], (type_url, name)


def test_one_changed_route_rebuilds_only_that_route() -> None:
    translator = Translator()
    before = translator.translate(world())
    assert translator.last_stats.misses["route"] == 21
    after = translator.translate(world(timeout_of_r3=5_000))
    stats = translator.last_stats
    assert stats.misses["route"] == 1 and stats.hits["route"] == 20
    assert stats.hits["backend"] == 5 and not stats.misses["backend"]
    assert stats.hits["failover"] == 4 and not stats.misses["failover"]
    assert changed_between(before, after) == {(ROUTE, table_name(after.resources, "http-8080"))}
    assert after.resources == translate(world(timeout_of_r3=5_000)).resources


def test_endpoint_change_touches_only_that_backends_assignment() -> None:
    translator = Translator()
    gw, moved = world(), replica_moved(world(), "s2")
    before, after = translator.translate(gw), translator.translate(moved)
    assert translator.last_stats.misses["backend"] == 1 and translator.last_stats.misses["route"] == 0
    assert changed_between(before, after) == {(ENDPOINT, "s2"), (ENDPOINT, "failover/s2/s0")}  # its pair's primary
    assert translator.last_stats.misses["failover"] == 1 and translator.last_stats.hits["failover"] == 3
    assert after.resources == translate(moved).resources


def test_a_shared_fallbacks_replicas_change_its_pairs_assignments_not_their_clusters() -> None:
    translator = Translator()
    moved = replica_moved(world(), "s0")
    before, after = translator.translate(world()), translator.translate(moved)
    pairs = {f"failover/s{i}/s0" for i in range(1, 5)}
    assert changed_between(before, after) == {(ENDPOINT, "s0"), *((ENDPOINT, n) for n in pairs)}
    assert all(after.resources[CLUSTER][n] is before.resources[CLUSTER][n] for n in pairs)  # kept, not rebuilt
    assert after.resources == translate(moved).resources and dict(after.owners) == dict(translate(moved).owners)


def test_cache_forgets_objects_that_left_the_world() -> None:
    translator = Translator()
    translator.translate(world(20))
    translator.translate(world(2))
    assert sum(len(entry.routes) for entry in translator._listeners.values()) == 3  # r0, r1 and x
    translator.translate(world(20))
    assert translator.last_stats.misses["route"] == 18


def test_backends_without_routes_still_get_clusters() -> None:
    result = translate(gateway(listener(route("r", "a")), backends=(backend("a"), backend("idle"))))
    assert "idle" in result.resources[CLUSTER] and "idle" in result.resources[ENDPOINT]


def test_every_reference_resolves_and_a_dangling_one_is_found() -> None:
    from tests.support.references import dangling_references

    result = translate(world())
    assert dangling_references(result.resources) == []
    broken = {t: dict(by_name) for t, by_name in result.resources.items()}
    del broken[ENDPOINT]["s1"], broken[SECRET]["default/cert"], broken[ENDPOINT]["failover/s2/s0"]
    problems = dangling_references(broken)
    assert "clusters s1 → endpoints s1" in problems
    assert "listeners https-8443 → secrets default/cert" in problems
    assert "clusters failover/s2/s0 → endpoints failover/s2/s0" in problems
    # The /ready route's checks are references too: a ready backend without a cluster is found.
    ghost = translate(gateway(listener(route("r", "a"), ready_backends=("a", "ghost")), backends=(backend("a"),)))
    assert {p.split(" → ")[1] for p in dangling_references(ghost.resources)} == {"clusters ghost"}


def test_listener_is_reused_only_while_its_routes_are_equal() -> None:
    translator = Translator()
    translator.translate(world())
    translator.translate(world())
    assert translator.last_stats.hits["listener"] == 2 and not translator.last_stats.misses["listener"]
    # Same provider name, new issuer: route bytes stay equal, but the listener's jwt_authn
    # filter must change — the listener key follows route equality, not route bytes.
    gw = world()
    first = gw.listeners[0]
    reissued = tuple(
        replace(r, auth=(replace(r.auth[0], issuer="https://new-issuer"),)) if r.auth else r for r in first.routes
    )
    before = translator.translate(gw)
    after = translator.translate(replace(gw, listeners=(replace(first, routes=reissued), gw.listeners[1])))
    assert translator.last_stats.misses["listener"] == 1
    assert after.resources[LISTENER]["http-8080"].version != before.resources[LISTENER]["http-8080"].version
    assert b"https://new-issuer" in after.resources[LISTENER]["http-8080"].body


def test_framed_route_config_equals_route_modules_assembly() -> None:
    """The translator frames each route once and assembles RouteConfigurations itself;
    the bytes must stay those of `route.route_config_bytes` (and so of the message)."""
    from routing_engine.translate import route as route_module
    from routing_engine.translate.wire import framed_route, route_config_bytes

    translator = Translator()
    bodies = [translator.route_message(r).SerializeToString(deterministic=True) for r in world(130).listeners[0].routes]
    for chosen in ([], bodies[:1], bodies):
        assert route_config_bytes("http-8080", [framed_route(b) for b in chosen]) == route_module.route_config_bytes(
            "http-8080", chosen)


def test_a_backend_added_elsewhere_keeps_the_other_listeners_and_lets_a_waiting_route_in() -> None:
    """Adding a server changes the gateway's backends: a listener whose routes all had
    theirs is kept as it is (a big one's tables are not laid out again); one with a route
    left out for a missing backend is checked again, and the route comes in once its
    backend is there."""
    main = listener(route("r", "a"), *(route(f"p{i}", "a", path=f"/v1/p{i}") for i in range(300)))
    waiting = listener(route("w", "b", path="/w"), name="http-9000", port=9000)
    translator = Translator()
    first = translator.translate(gateway(main, waiting, backends=(backend("a"),)))
    assert [e.message for e in first.errors] == ["route w: backend(s) b not in the gateway; route left out"]
    second = translator.translate(gateway(main, waiting, backends=(backend("a"), backend("b"))))
    assert not second.errors
    assert "w" in routes_of(table_of(second, "http-9000"))
    assert second.resources[LISTENER]["http-8080"] is first.resources[LISTENER]["http-8080"]
    assert translator.last_stats.misses["route"] == 1 and translator.last_stats.misses["table"] == 0
    # And the other way: a backend gone from the gateway fails the routes that need it.
    third = translator.translate(gateway(main, waiting, backends=(backend("b"),)))
    assert len(third.errors) == 301 and all("backend(s) a not in the gateway" in e.message for e in third.errors)
    assert third == translate(gateway(main, waiting, backends=(backend("b"),)))


def test_a_route_edited_in_place_to_a_new_backend_fails_when_that_backend_goes() -> None:
    """What a kept listener needs grows with its in-place edits: a route moved to `b`
    by an edit is left out once `b` leaves the gateway, as a fresh translation does."""
    routes = [route(f"r{i}", "a", path=f"/v1/r{i}") for i in range(16)]
    translator = Translator()
    translator.translate(gateway(listener(*routes), backends=(backend("a"), backend("b"))))
    routes[0] = route("r0", "b", path="/v1/r0")
    edited = gateway(listener(*routes), backends=(backend("a"), backend("b")))
    assert translator.translate(edited) == translate(edited)
    gone = gateway(listener(*routes), backends=(backend("a"),))
    result = translator.translate(gone)
    assert [e.message for e in result.errors] == ["route r0: backend(s) b not in the gateway; route left out"]
    assert result == translate(gone)
