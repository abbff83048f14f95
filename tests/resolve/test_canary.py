"""Canary (SPEC 3.4): the one group with two destinations, weights from live state,
trafficSplit or the entries."""

from __future__ import annotations

from routing_engine.api.resources import Resource

from typing import Any

from tests.resolve.build import cond, ir_route, mr, route, run, server, to


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


def test_out_of_range_live_weights_are_ignored() -> None:
    res = run(servers() + [canary_route(trafficSplit={"stable": 90, "canary": 10})], live_weights={mr("r"): (-5, 105)})
    assert weights(res, 1) == [("stable", 90), ("canary", 10)]
