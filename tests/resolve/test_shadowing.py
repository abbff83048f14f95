"""Shadowing: the `covers` relation (sound) and Shadowed conditions on ModelRoutes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing_engine import ir
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.resolve.shadowing import covers, first_shadowers
from tests.resolve.build import cond, mr, route, run, server, to


def m(path: str, kind: str = "segment_prefix", headers: dict[str, ir.StringMatch] | None = None,
      query: dict[str, ir.StringMatch] | None = None, model: str | None = None) -> ir.RouteMatch:
    return ir.RouteMatch(ir.PathMatch(kind, path), tuple(sorted((headers or {}).items())),  # type: ignore[arg-type]
                         tuple(sorted((query or {}).items())), model)


EXACT = ir.StringMatch("exact", "gold")


@pytest.mark.parametrize(("a", "b", "expected"), [
    (m("/v1"), m("/v1/a"), True),
    (m("/v1"), m("/v1"), True),
    (m("/"), m("/anything/at/all"), True),
    (m("/v1"), m("/v1a"), False),  # segment prefix, not string prefix
    (m("/v1/a"), m("/v1"), False),
    (m("/v1"), m("/v1/a/b", "exact"), True),
    (m("/v1/a", "exact"), m("/v1/a"), False),
    (m("/v1/a", "exact"), m("/v1/a", "exact"), True),
    (m("/v1/*/x", "glob"), m("/v1/a/x", "exact"), True),
    (m("/v1/*/x", "glob"), m("/v1/a/b/x", "exact"), False),
    (m("/v1/*/x", "glob"), m("/v1"), False),
    (m("/v1"), m("/v1/*/x", "glob"), True),
    (m("/v1/a"), m("/v1/*/x", "glob"), False),
    (m("/v1", headers={"x": EXACT}), m("/v1/a"), False),
    (m("/v1"), m("/v1/a", headers={"x": EXACT}), True),
    (m("/v1", headers={"x": EXACT}), m("/v1", headers={"x": EXACT, "y": EXACT}), True),
    (m("/v1", headers={"x": ir.StringMatch("present")}), m("/v1", headers={"x": EXACT}), True),
    (m("/v1", headers={"x": ir.StringMatch("prefix", "go")}), m("/v1", headers={"x": EXACT}), True),
    (m("/v1", headers={"x": ir.StringMatch("prefix", "si")}), m("/v1", headers={"x": EXACT}), False),
    (m("/v1", headers={"x": ir.StringMatch("regex", ".*")}), m("/v1", headers={"x": EXACT}), False),
    (m("/v1", headers={"x": EXACT}), m("/v1", headers={"x": ir.StringMatch("present")}), False),
    (m("/v1", query={"v": EXACT}), m("/v1", headers={"v": EXACT}), False),
    (m("/v1", model="a"), m("/v1"), False),
    (m("/v1"), m("/v1", model="a"), True),
    (m("/v1", model="a"), m("/v1", model="b"), False),
])
def test_covers(a: ir.RouteMatch, b: ir.RouteMatch, expected: bool) -> None:
    assert covers(a, b) is expected


def r(name: str, match: ir.RouteMatch) -> ir.Route:
    return ir.Route(name, ObjectKey("ModelRoute", "default", name), match, (), 1, 0)


def test_first_shadowers_names_the_earliest_covering_route_only_for_checked() -> None:
    routes = [r("wide", m("/v1")), r("glob", m("/v1/*/x", "glob")), r("narrow", m("/v1/a/x", "exact")),
              r("other", m("/v2")), r("unchecked", m("/v1/b"))]
    assert first_shadowers(routes, ["glob", "narrow", "other"]) == {"glob": "wide", "narrow": "wide"}


def servers() -> list[Resource]:
    return [server("a", "/v1/a"), server("b", "/v1/b")]


def test_later_group_behind_an_unconditional_group_is_shadowed_but_compiled() -> None:
    res = run(servers() + [route("r", {"routes": [to("a"), to("b", match={"headers": {"x": "1"}})]})])
    shadow = cond(res, mr("r"), "Shadowed")
    assert (shadow.status, shadow.reason) == ("True", "GroupShadowed")
    assert shadow.message == ("ModelRoute default/r: spec.routes[1] can never match: "
                              "route modelroute/default/r/0 matches all of its requests first")
    assert res.statuses[mr("r")].phase in ("Active", "Pending")
    assert res.statuses[mr("r")].active_routes == 1
    assert cond(res, mr("r"), "Accepted").status == "True"


def test_specific_before_general_is_not_shadowed() -> None:
    res = run(servers() + [route("r", {"routes": [
        to("b", match={"headers": {"x": "1"}}), to("b", match={"model": "m"}), to("a"),
    ]})])
    shadow = cond(res, mr("r"), "Shadowed")
    assert (shadow.status, shadow.reason) == ("False", "NotShadowed")
    assert res.statuses[mr("r")].active_routes == 3


def test_other_modelroute_on_same_front_door_with_fallback_shadows_younger_one() -> None:
    res = run(servers() + [
        route("old", {"path": "/v1/a", "routes": [to("a", match={"model": "x"})], "fallback": {"modelServerRef": {"name": "a"}}},
              created="2024-01-01T00:00:00Z"),
        route("young", {"path": "/v1/a", "routes": [to("b", match={"model": "y"})]}, created="2024-02-01T00:00:00Z"),
    ])
    assert cond(res, mr("young"), "Shadowed").status == "True"
    assert "route modelroute/default/old/fallback" in cond(res, mr("young"), "Shadowed").message
    assert cond(res, mr("old"), "Shadowed").status == "False"


def test_longer_front_door_is_tried_first_so_not_shadowed() -> None:
    res = run(servers() + [
        route("wide", {"path": "/v1", "routes": [to("a")], "fallback": {"modelServerRef": {"name": "a"}}},
              created="2024-01-01T00:00:00Z"),
        route("deep", {"path": "/v1/deep", "routes": [to("b")]}, created="2024-02-01T00:00:00Z"),
    ])
    assert cond(res, mr("deep"), "Shadowed").status == "False"
    assert cond(res, mr("wide"), "Shadowed").status == "False"


def test_group_is_shadowed_only_if_shadowed_on_every_listener() -> None:
    # No owner for /x: `r` sits on 8080 and 9090; `blocker` (owner-less too) only on 8080.
    res = run([server("a", "/v1/a", 8080), server("c", "/v1/c", 9090),
               route("blocker", {"path": "/x", "routes": [to("a")]}, created="2024-01-01T00:00:00Z"),
               route("r", {"path": "/x", "routes": [to("a", match={"model": "m"}), to("c", match={"model": "n"})]},
                     created="2024-02-01T00:00:00Z")])
    assert cond(res, mr("r"), "Shadowed").status == "False"
    # The same blocker reaching both ports (installed on both listeners) shadows it.
    res = run([server("a", "/v1/a", 8080), server("c", "/v1/c", 9090),
               route("blocker", {"path": "/x", "routes": [to("a"), to("c")]}, created="2024-01-01T00:00:00Z"),
               route("r", {"path": "/x", "routes": [to("a", match={"model": "m"}), to("c", match={"model": "n"})]},
                     created="2024-02-01T00:00:00Z")])
    assert cond(res, mr("r"), "Shadowed").status == "True"
    assert res.statuses[mr("r")].active_routes == 0


_PATHS = st.sampled_from([("segment_prefix", "/"), ("segment_prefix", "/v1"), ("segment_prefix", "/v1/a"),
                          ("exact", "/v1/a"), ("exact", "/v1/a/b"), ("glob", "/v1/*/b"), ("glob", "/v1/a/*")])
_STRINGS = st.sampled_from([ir.StringMatch("exact", "gold"), ir.StringMatch("exact", "go"),
                            ir.StringMatch("prefix", "g"), ir.StringMatch("prefix", "go"),
                            ir.StringMatch("present"), ir.StringMatch("regex", "g.*")])
_MATCHES = st.builds(
    lambda path, headers, query, model: m(path[1], path[0], headers, query, model),
    _PATHS,
    st.dictionaries(st.sampled_from(["x", "y"]), _STRINGS, max_size=2),
    st.dictionaries(st.sampled_from(["q"]), _STRINGS, max_size=1),
    st.sampled_from([None, None, "a", "b"]),
)


def _naive_first_shadowers(routes: list[ir.Route]) -> dict[str, str]:
    """The definition: the first earlier route that covers each route."""
    found = {}
    for position, route in enumerate(routes):
        earlier = next((e for e in routes[:position] if covers(e.match, route.match)), None)
        if earlier is not None:
            found[route.name] = earlier.name
    return found


@settings(max_examples=300, deadline=None)
@given(st.lists(_MATCHES, max_size=25))
def test_indexed_scan_finds_what_comparing_every_pair_finds(matches: list[ir.RouteMatch]) -> None:
    routes = [r(f"r{n}", match) for n, match in enumerate(matches)]
    assert first_shadowers(routes, [route.name for route in routes]) == _naive_first_shadowers(routes)
