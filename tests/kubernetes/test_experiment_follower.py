"""A replica that does not lead shows the rollouts on its experiment page from the
statuses the leader wrote (its runner is the leader's alone), and refuses actions."""

from __future__ import annotations

from dataclasses import asdict

from controller.canary.decisions import record, start
from controller.local.status_view import GroupView, RouteView, SplitView
from modelroute.canary_wiring import ClusterCanaryWiring
from modelroute.control_loop import ControlLoop
from modelroute.targets import Placement
from routing_engine.api.resources import ObjectKey

KEY = ObjectKey("ModelRoute", "team", "chat")


def test_a_follower_reads_the_rollout_the_leader_wrote() -> None:
    state = record(start("team/v1", "team/v2", (70, 30), now=100.0), "step", now=160.0)
    obj = {"metadata": {"namespace": "team", "name": "chat"},
           "status": {"canary": {"stableWeight": 70, "canaryWeight": 30, "phase": "Progressing",
                                 "lastSuccessRate": 99.5, "failedIntervals": 0, "message": "step"},
                      "rollout": {"state": asdict(state), "report": {"variants": [], "verdict": "canary worse"}}}}
    wiring = ClusterCanaryWiring(ControlLoop(placement=Placement()), lambda: [obj])
    view = RouteView(KEY, "/v1", (GroupView("*", (SplitView("team/v1", 70), SplitView("team/v2", 30))),))
    (shown,), histories = wiring.rollouts([view])
    assert shown.canary is not None and (shown.canary.phase, shown.canary.canary_weight) == ("Progressing", 30)
    assert shown.canary.report == {"variants": [], "verdict": "canary worse"}
    assert [s.role for s in shown.groups[0].splits] == ["stable", "canary"]
    assert [e[1] for e in histories[KEY]] == ["start", "step"]
    assert wiring.command(KEY, "promote") is None  # only the leader acts
