"""Canary (SPEC 3.4): the one group with two destinations, weights from live state,
trafficSplit or the entries."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from routing_engine.api.resources import KIND_BY_NAME, ModelRoute, Resource
from routing_engine.canaries import canary_groups
from routing_engine.world import ServedSplit
from tests.resolve.build import cond, ir_route, mr, ms, route, run, server, to
from tests.resolve.test_incremental import ROUTES, SERVERS, route_doc, server_doc


def servers() -> list[Resource]:
    return [server("stable", "/v1/m"), server("canary", "/v1/m2"), server("other", "/v1/o")]


def canary_route(**canary: Any) -> Any:
    return route("r", {"routes": [to("other", match={"model": "o"}), to("stable", weight=70), to("canary", weight=30)],
                       "canary": {"enabled": True, **canary}})


def weights(res: Any, group: int) -> list[tuple[str, int]]:
    return [(b.backend.rsplit("/", 1)[1], b.weight) for b in ir_route(res, f"modelroute/default/r/{group}").backends]


def test_traffic_split_sets_the_starting_weights() -> None:
    res = run(servers() + [canary_route(trafficSplit={"stable": 90, "canary": 10})])
    assert weights(res, 1) == [("stable", 90), ("canary", 10)]
    assert weights(res, 0) == [("other", 1)]


def test_live_weights_replace_the_split() -> None:
    res = run(servers() + [canary_route(trafficSplit={"stable": 90, "canary": 10})], live_weights={mr("r"): (40, 60)})
    assert weights(res, 1) == [("stable", 40), ("canary", 60)]


def test_rolled_back_canary_keeps_its_backend_at_weight_zero() -> None:
    res = run(servers() + [canary_route()], live_weights={mr("r"): (100, 0)})
    assert weights(res, 1) == [("stable", 100), ("canary", 0)]


def test_without_split_or_live_weights_the_entries_weights_apply() -> None:
    assert weights(run(servers() + [canary_route()]), 1) == [("stable", 70), ("canary", 30)]


def test_disabled_canary_ignores_the_split() -> None:
    res = run(servers() + [route("r", {"routes": [to("stable", weight=70), to("canary", weight=30)],
                                       "canary": {"enabled": False, "trafficSplit": {"stable": 0, "canary": 100}}})])
    assert weights(res, 0) == [("stable", 70), ("canary", 30)]


# The model validator refuses these when it can group the entries (tests/api); a segment
# prefix match without a written front door leaves the grouping, and the rule, to the engine.
ELSEWHERE = {"path": "/v1/q/*"}


def test_no_two_destination_group_is_a_validation_error_on_spec_canary() -> None:
    res = run(servers() + [route("r", {"routes": [to("stable"), to("canary", match=ELSEWHERE), to("other"), to("other")],
                                       "canary": {"enabled": True}})])
    accepted = cond(res, mr("r"), "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "ValidationFailed")
    assert accepted.message.startswith("ModelRoute default/r: spec.canary: ")
    assert "found 0" in accepted.message
    assert res.statuses[mr("r")].phase == "Failed"


def test_two_eligible_groups_are_ambiguous() -> None:
    res = run(servers() + [route("r", {"routes": [
        to("stable"), to("canary"), to("stable", match=ELSEWHERE), to("other", match=ELSEWHERE),
    ], "canary": {"enabled": True}})])
    assert "found 2" in cond(res, mr("r"), "Accepted").message


def test_one_server_twice_is_no_canary() -> None:
    """SPEC 3.4: stable and canary are two servers. A reference with the route's namespace
    written out is the same server as one without it."""
    res = run(servers() + [route("r", {"routes": [to("stable"), to("stable", "default"), to("other", match=ELSEWHERE)],
                                       "canary": {"enabled": True}})])
    accepted = cond(res, mr("r"), "Accepted")
    assert (accepted.status, accepted.reason) == ("False", "ValidationFailed")
    assert accepted.message == (
        "ModelRoute default/r: spec.routes[1].destination.modelServerRef: the canary destination is ModelServer "
        "default/stable, as is the stable one (spec.routes[0]); a canary needs two different ModelServers, stable "
        "then canary")
    assert canary_groups(servers() + [route("r", {"routes": [to("stable"), to("stable"), to("other", match=ELSEWHERE)],
                                                  "canary": {"enabled": True}})]) == {}


def test_the_same_name_in_another_namespace_is_another_server() -> None:
    route_ = route("r", {"routes": [to("stable"), to("stable", "team")], "canary": {"enabled": True}})
    assert isinstance(route_, ModelRoute) and route_.same_server_canary(0, 1) is None
    with pytest.raises(ValidationError, match="a canary needs two different ModelServers"):
        route("r", {"routes": [to("stable", "team"), to("stable", "team")], "canary": {"enabled": True}},
              namespace="default")


def test_out_of_range_live_weights_are_ignored() -> None:
    res = run(servers() + [canary_route(trafficSplit={"stable": 90, "canary": 10})], live_weights={mr("r"): (-5, 105)})
    assert weights(res, 1) == [("stable", 90), ("canary", 10)]


# --- the canary groups the runner rolls out (routing_engine.canaries) ----------------


def test_canary_groups_name_stable_then_canary_with_start_and_analysis() -> None:
    analysis = {"threshold": 95, "interval": "1m", "stepWeight": 25}
    found = canary_groups(servers() + [canary_route(trafficSplit={"stable": 80, "canary": 20}, analysis=analysis)])
    assert list(found) == [mr("r")]
    group = found[mr("r")]
    assert (group.stable, group.canary, group.start) == (ms("stable"), ms("canary"), (80, 20))
    assert group.analysis is not None and (group.analysis.threshold, group.analysis.step_weight) == (95, 25)


def test_canary_start_without_traffic_split() -> None:
    stepped = canary_groups(servers() + [canary_route(analysis={"threshold": 95, "interval": "1m", "stepWeight": 25})])
    assert stepped[mr("r")].start == (75, 25)
    plain = canary_groups(servers() + [canary_route()])[mr("r")]
    assert (plain.start, plain.analysis) == ((90, 10), None)


def test_no_canary_group_without_canary_or_an_eligible_group() -> None:
    assert canary_groups(servers() + [route("r", {"routes": [to("stable"), to("canary")]})]) == {}
    ambiguous = route("r", {"routes": [to("stable"), to("canary"), to("stable", match=ELSEWHERE),
                                       to("other", match=ELSEWHERE)], "canary": {"enabled": True}})
    assert canary_groups(servers() + [ambiguous]) == {}


def test_canary_groups_use_the_real_front_door() -> None:
    """The front door here is the fallback's path `/v1/m2`: an entry matching `/v1/m2/*`
    is in the same group as an entry without a path (grouped under "/" they would be
    two groups of one and no canary)."""
    r = route("r", {"fallback": {"modelServerRef": {"name": "canary"}},
                    "routes": [to("stable"), to("canary", match={"path": "/v1/m2/*"})],
                    "canary": {"enabled": True, "trafficSplit": {"stable": 70, "canary": 30}}})
    found = canary_groups(servers() + [r])
    assert (found[mr("r")].stable, found[mr("r")].canary) == (ms("stable"), ms("canary"))
    served = run(servers() + [r], live_weights={mr("r"): (40, 60)}).routes[mr("r")]
    assert served.groups[0].splits == (ServedSplit(ms("stable"), 40), ServedSplit(ms("canary"), 60))


@st.composite
def canary_route_doc(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A ModelRoute with canary.enabled whose entries may name a path: a front door
    (spec.path, else its first server's) and an entry path that may or may not be the
    same segment prefix, so the grouping depends on the real front door."""
    entries = []
    for _ in range(draw(st.integers(2, 3))):
        entry: dict[str, Any] = {"destination": {"modelServerRef": {"name": draw(st.sampled_from(SERVERS[:4]))}}}
        if draw(st.booleans()):
            entry["match"] = {"path": draw(st.sampled_from(["/v1/*", "/v1/a/*", "/v2/*", "/*"]))}
        entries.append(entry)
    spec: dict[str, Any] = {"routes": entries, "canary": {"enabled": True}}
    if draw(st.booleans()):
        spec["path"] = draw(st.sampled_from(["/v1", "/v1/a", "/v2", "/"]))
    return {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_canary_groups_are_the_groups_the_engine_serves(data: st.DataObject) -> None:
    """For any world: a served route with canary.enabled has a canary group, and its two
    destinations are, stable first, the splits of one of its served groups; a route
    without one is not served (ValidationFailed)."""
    docs = [data.draw(server_doc(name)) for name in SERVERS[:4]]
    docs += [data.draw(route_doc(name)) for name in ROUTES[:2]]
    docs += [data.draw(canary_route_doc(name)) for name in ROUTES[2:]]
    objs: list[Resource] = []
    for doc in docs:
        try:
            objs.append(KIND_BY_NAME[doc["kind"]].model_validate(doc))
        except ValidationError:  # what the model refuses never reaches the engine
            continue
    found = canary_groups(objs)
    served = run(objs).routes
    for obj in objs:
        if not isinstance(obj, ModelRoute) or obj.key not in served or not (obj.spec.canary and obj.spec.canary.enabled):
            continue
        group = found[obj.key]
        pairs = [[s.server for s in g.splits] for g in served[obj.key].groups if not g.fallback]
        expected = [group.stable] if group.stable == group.canary else [group.stable, group.canary]
        assert expected in pairs
