"""The canary runner with a fake clock and fake stats: targets from specs, verdicts per
interval, persistence and resume, commands through the file queue."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.canary import commands as canary_commands
from controller.canary.runner import CanaryPair, CanaryRunner, CanaryStore
from controller.canary.stats_sink import VariantWindow
from routing_engine.api.loader import load_text
from routing_engine.canaries import canary_groups
from routing_engine.api.resources import ModelRoute, ObjectKey

KEY = ObjectKey("ModelRoute", "default", "chat")
STABLE, CANARY = "modelserver/default/v1", "modelserver/default/v2"


def route(**canary: Any) -> ModelRoute:
    doc = {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute", "metadata": {"name": "chat"},
           "spec": {"routes": [{"destination": {"modelServerRef": {"name": "v1"}}},
                               {"destination": {"modelServerRef": {"name": canary.pop("second", "v2")}}}],
                    "canary": {"enabled": True, **canary}}}
    (obj,), errors = load_text(yaml.safe_dump(doc), "test")
    assert not errors and isinstance(obj, ModelRoute)
    return obj


ANALYSIS = {"trafficSplit": {"stable": 90, "canary": 10},
            "analysis": {"threshold": 95, "interval": "2s", "stepWeight": 30, "maxFailures": 2, "minRequests": 10}}


class FakeStats:
    """Every window: 100 requests per variant (the canary's with `canary_errors` 5xx), per
    upstream attempt and per request alike."""

    def __init__(self) -> None:
        self.canary_errors = 0
        self.requests = 100
        self.asked: list[tuple[float, float | None]] = []  # analysis windows (canary first)

    def window(self, clusters: Iterable[str], *, since: float, until: float | None = None) -> dict[str, VariantWindow]:
        clusters = list(clusters)
        if clusters[0] == CANARY:
            self.asked.append((since, until))

        def of(c: str) -> VariantWindow:
            errors = self.canary_errors if c == CANARY else 0
            return VariantWindow(c, (("2xx", self.requests - errors), ("5xx", errors)), (1.0, 2.0),
                                 ((200, self.requests - errors), (503, errors)), (("duration", (5.0, 7.0)),))
        return {c: of(c) for c in clusters}


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.now = 1000.0
        self.stats = FakeStats()
        self.applied: list[dict[ObjectKey, tuple[int, int]]] = []
        self.tmp = tmp
        self.runner = self.make()

    def make(self) -> CanaryRunner:
        return CanaryRunner(store=CanaryStore(self.tmp / "canary.json"), stats=self.stats,
                            apply_weights=lambda w: self.applied.append(dict(w)),
                            commands_dir=self.tmp / "rollout", clock=lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.runner.tick()


def test_target_is_the_two_destination_group() -> None:
    target = CanaryPair.of(canary_groups([route(**ANALYSIS)])[KEY])
    assert (target.stable.name, target.canary.name, target.start) == ("v1", "v2", (90, 10))
    assert target.settings is not None and target.settings.interval_s == 2.0
    assert canary_groups([route(enabled=False)]) == {}


def test_the_pair_is_grouped_under_the_real_front_door(tmp_path: Path) -> None:
    """The front door is spec.path `/v1/chat`: an entry matching `/v1/chat/*` is in the
    group of an entry without a path, as the engine serves it, so the rollout runs."""
    doc = {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute", "metadata": {"name": "chat"},
           "spec": {"path": "/v1/chat", "routes": [
               {"destination": {"modelServerRef": {"name": "v1"}}},
               {"destination": {"modelServerRef": {"name": "v2"}}, "match": {"path": "/v1/chat/*"}}],
               "canary": {"enabled": True, "trafficSplit": {"stable": 80, "canary": 20}}}}
    (obj,), errors = load_text(yaml.safe_dump(doc), "test")
    assert not errors
    h = Harness(tmp_path)
    h.runner.set_routes([obj])
    assert h.applied[-1] == {KEY: (80, 20)}
    assert (h.runner.states[KEY].stable, h.runner.states[KEY].canary) == ("default/v1", "default/v2")


def test_steps_on_each_interval_and_promotes(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.runner.set_routes([route(**ANALYSIS)])
    assert h.applied[-1] == {KEY: (90, 10)}
    h.advance(1.0)
    assert h.applied[-1] == {KEY: (90, 10)}  # not an interval yet
    for expected in [(60, 40), (30, 70), (0, 100)]:
        h.advance(2.0)
        assert h.applied[-1] == {KEY: expected}
    assert h.runner.states[KEY].phase == "Promoted"
    assert h.runner.conditions()[KEY][0].reason == "CanaryPromoted"
    report = h.runner.reports[KEY]
    assert report["variants"][1]["requests"] == 100 and report["verdict"] == "no significant difference yet"
    assert report["looks"] == 3  # one look per interval
    # Back-to-back analysis windows: each starts where the last one ended.
    assert h.stats.asked == [(1000.0, 1003.0), (1003.0, 1005.0), (1005.0, 1007.0)]


def test_failing_canary_rolls_back_and_reports_degraded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="controller.canary.runner")
    h = Harness(tmp_path)
    h.stats.canary_errors = 30
    h.runner.set_routes([route(**ANALYSIS)])
    h.advance(2.0)
    assert h.runner.states[KEY].failures == 1 and h.applied[-1] == {KEY: (90, 10)}
    h.advance(2.0)
    assert h.applied[-1] == {KEY: (100, 0)} and h.runner.states[KEY].phase == "RolledBack"
    assert {c.type: c.status for c in h.runner.conditions()[KEY]} == {"Progressing": "False", "Degraded": "True"}
    assert h.runner.reports[KEY]["verdict"] == "canary worse"  # 30 % vs 0 % errors: the sequential test sees it
    assert h.runner.decisions == {(KEY, "fail"): 1, (KEY, "rollback"): 1}
    assert [e[1] for e in h.runner.states[KEY].history] == ["start", "fail", "rollback"]
    decisions = [r.getMessage() for r in caplog.records if r.getMessage().startswith("canary decision")]
    assert len(decisions) == 2  # every verdict logged with its numbers
    assert "action=rollback weights=90/10→100/0 success=70.00% requests=100 errors=30 failures=2/2" in decisions[1]


def test_an_interval_without_enough_requests_warns_with_what_it_would_take(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.stats.requests = 4  # 4 to each variant per interval: minRequests is 10
    h.runner.set_routes([route(**ANALYSIS)])
    h.advance(2.0)
    h.advance(2.0)
    assert h.runner.states[KEY].weights == (90, 10)
    conditions = {c.type: c for c in h.runner.conditions()[KEY]}
    assert conditions["Progressing"].status == "True"
    warning = conditions["Degraded"]
    assert (warning.status, warning.reason) == ("True", "InsufficientTraffic")
    assert "got 4 of minRequests 10 in its 2s interval at 10%" in warning.message
    assert "the route had 8 requests in the interval" in warning.message and "needs about 100" in warning.message
    # Holds are one history event, not one per interval; the next verdict clears the warning.
    assert [e[1] for e in h.runner.states[KEY].history] == ["start", "hold"]
    h.stats.requests = 100
    h.advance(2.0)
    assert h.runner.states[KEY].weights == (60, 40)
    assert {c.type for c in h.runner.conditions()[KEY]} == {"Progressing"}
    assert [e[1] for e in h.runner.states[KEY].history] == ["start", "hold", "step"]


def test_restart_resumes_from_the_persisted_state(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.runner.set_routes([route(**ANALYSIS)])
    h.advance(2.0)
    assert h.runner.states[KEY].weights == (60, 40)
    restarted = h.make()
    assert restarted.live_weights() == {KEY: (60, 40)}  # before any spec arrives
    assert restarted.states[KEY].history == h.runner.states[KEY].history  # the history survives
    h.runner = restarted
    restarted.set_routes([route(**ANALYSIS)])
    assert restarted.states[KEY].weights == (60, 40)
    h.advance(2.0)
    assert restarted.states[KEY].weights == (30, 70)


def test_new_canary_destination_starts_a_new_rollout_and_disabling_ends_it(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.runner.set_routes([route(**ANALYSIS)])
    h.advance(2.0)
    h.runner.set_routes([route(second="v3", **ANALYSIS)])
    assert h.runner.states[KEY].weights == (90, 10) and h.runner.states[KEY].canary == "default/v3"
    h.runner.set_routes([route(enabled=False)])
    assert h.runner.states == {} and h.applied[-1] == {}


def test_commands_through_the_queue(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.runner.set_routes([route(**ANALYSIS)])
    queue = tmp_path / "rollout"
    pause = canary_commands.submit(queue, "default/chat", "pause")
    h.runner.poll_commands()
    reply = canary_commands.reply_of(queue, pause)
    assert reply is not None and reply["ok"] and reply["canary"]["phase"] == "Paused"
    h.advance(5.0)
    assert h.runner.states[KEY].weights == (90, 10)  # paused: no step
    bad = canary_commands.submit(queue, "chat", "pause")
    h.runner.poll_commands()
    reply = canary_commands.reply_of(queue, bad)
    assert reply is not None and not reply["ok"] and "only a Progressing rollout" in reply["message"]
    missing = canary_commands.submit(queue, "default/nope", "promote")
    h.runner.poll_commands()
    reply = canary_commands.reply_of(queue, missing)
    assert reply is not None and not reply["ok"] and "has no canary rollout" in reply["message"]
    for what in ("resume", "promote"):
        canary_commands.submit(queue, "chat", what)
    h.runner.poll_commands()
    assert h.applied[-1] == {KEY: (0, 100)} and h.runner.states[KEY].phase == "Promoted"
    unclaimed = canary_commands.submit(queue, "chat", "abort")
    assert canary_commands.withdraw(queue, unclaimed)
    h.runner.poll_commands()
    assert h.runner.states[KEY].phase == "Promoted"
