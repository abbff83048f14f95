"""`Compiled.routes`: what each installed ModelRoute serves, group by group, as the
listeners carry it — the splits status views show, with no reading of route names."""

from __future__ import annotations

from routing_engine import engine, ir
from routing_engine.world import ServedGroup, ServedRoute, ServedSplit, Target, World
from tests.resolve.build import mr, ms, route, run, server, to
from tests.resolve.test_inference import infer

SERVERS = [server("a", "/v1/a"), server("b", "/v1/b"), server("c", "/v1/c")]


def test_groups_in_written_order_with_merged_weights_then_the_fallback() -> None:
    res = run([*SERVERS, route("r", {"path": "/v1/x", "fallback": {"modelServerRef": {"name": "c"}}, "routes": [
        to("a", weight=60), to("b", weight=30), to("a", weight=10),
        to("b", match={"headers": {"X-User": "beta"}}),
    ]})])
    front = ir.PathMatch("segment_prefix", "/v1/x")
    assert res.routes[mr("r")] == ServedRoute("/v1/x", (
        ServedGroup(ir.RouteMatch(front), (ServedSplit(ms("a"), 70), ServedSplit(ms("b"), 30))),
        ServedGroup(ir.RouteMatch(front, headers=(("x-user", ir.StringMatch("exact", "beta")),)),
                    (ServedSplit(ms("b"), 1),)),
        ServedGroup(ir.RouteMatch(front), (ServedSplit(ms("c"), 1),), fallback=True),
    ))


def test_the_front_door_is_the_first_destinations_path_without_spec_path() -> None:
    res = run([*SERVERS, route("r", {"routes": [to("b"), to("a")]})])
    served = res.routes[mr("r")]
    assert served.front_door == "/v1/b"
    assert [g.match.path for g in served.groups] == [ir.PathMatch("segment_prefix", "/v1/b")]
    assert not any(g.fallback for g in served.groups)


def test_live_canary_weights_are_what_is_shown() -> None:
    canary = route("r", {"path": "/v1/x", "routes": [to("a"), to("b")],
                         "canary": {"enabled": True, "trafficSplit": {"stable": 90, "canary": 10}}})
    assert [s.weight for s in run([*SERVERS, canary]).routes[mr("r")].groups[0].splits] == [90, 10]
    live = run([*SERVERS, canary], live_weights={mr("r"): (40, 60)}).routes[mr("r")]
    assert live.groups[0].splits == (ServedSplit(ms("a"), 40), ServedSplit(ms("b"), 60))


def test_a_path_front_door_whose_entry_path_is_the_front_door_is_one_group() -> None:
    """An entry matching `/v1/x/*` on a route whose front door is `/v1/x` is in the same
    group as an entry without a path: the engine groups with the real front door."""
    canary = route("r", {"path": "/v1/x", "routes": [to("a"), to("b", match={"path": "/v1/x/*"})],
                         "canary": {"enabled": True, "trafficSplit": {"stable": 80, "canary": 20}}})
    (group,) = run([*SERVERS, canary], live_weights={mr("r"): (30, 70)}).routes[mr("r")].groups
    assert group.splits == (ServedSplit(ms("a"), 30), ServedSplit(ms("b"), 70))


def test_adapter_copies_are_part_of_their_group_and_an_adapter_group_is_narrowed() -> None:
    world = [infer("lora", ("sql",)), infer("plain"), server("lora", "/v1/lora"), server("plain", "/v1/plain"),
             route("r", {"path": "/v1", "routes": [
                 to("lora", weight=70), to("plain", weight=30),
                 to("lora", weight=50, match={"model": "sql"}), to("plain", weight=50, match={"model": "sql"})]})]
    res = run(world)
    routes = [r.name for lst in res.gateway.listeners for r in lst.routes if r.owner == mr("r")]
    assert "modelroute/default/r/0/adapter/sql" in routes  # the copy is on the listener ...
    served = res.routes[mr("r")]
    assert [g.match.model for g in served.groups] == [None, "sql"]  # ... but not a group
    assert served.groups[0].splits == (ServedSplit(ms("lora"), 70), ServedSplit(ms("plain"), 30))
    assert served.groups[1].splits == (ServedSplit(ms("lora"), 50),)  # plain does not declare sql


def test_only_installed_routes_have_one() -> None:
    broken = route("broken", {"routes": [to("missing")]})
    other = route("other", {"path": "/v1/y", "routes": [to("a")]}, namespace="team")
    res = run([*SERVERS, server("a", "/v1/t", namespace="team"), broken, other,
               route("r", {"routes": [to("a")]})])
    assert list(res.routes) == [mr("r"), mr("other", "team")]
    scoped = run([*SERVERS, server("a", "/v1/t", namespace="team"), other, route("r", {"routes": [to("a")]})],
                 Target(role="sidecar", namespaces=frozenset({"default"})))
    assert list(scoped.routes) == [mr("r")]


def test_compiled_carries_them_and_a_kept_compiler_patches_them() -> None:
    base = [*SERVERS, route("r", {"routes": [to("a", weight=50), to("b", weight=50)]}),
            route("s", {"routes": [to("c")]})]
    compiler = engine.Compiler()
    first = compiler.compile(World(tuple(base)), Target())
    assert first.routes == engine.compile(World(tuple(base)), Target()).routes
    edited = [*base[:3], route("r", {"routes": [to("a", weight=20), to("b", weight=80)]}), base[4]]
    second = compiler.compile(World(tuple(edited)), Target())
    assert [s.weight for s in second.routes[mr("r")].groups[0].splits] == [20, 80]
    assert second.routes[mr("s")] is first.routes[mr("s")]  # the unchanged route's view is kept
    assert dict(second.routes) == dict(engine.compile(World(tuple(edited)), Target()).routes)
