"""The pure canary rules of SPEC 3.4 and the rollout commands."""

from __future__ import annotations

import pytest

from controller.canary.decisions import CanaryState, CommandRefused, Sample, Settings, command, decide, start

SETTINGS = Settings(threshold=95, interval_s=2, step_weight=30, max_failures=2, min_requests=20)


def fresh(weights: tuple[int, int] = (90, 10)) -> CanaryState:
    return start("default/stable", "default/canary", weights, now=0.0)


def test_healthy_intervals_step_up_by_step_weight_until_promoted() -> None:
    state = fresh()
    seen = []
    for n in range(1, 5):
        decision = decide(state, SETTINGS, Sample(requests=100, errors=1), now=n * 2.0)
        state = decision.state
        seen.append((decision.action, state.weights, state.phase))
    assert seen == [("step", (60, 40), "Progressing"), ("step", (30, 70), "Progressing"),
                    ("promote", (0, 100), "Promoted"), ("none", (0, 100), "Promoted")]
    assert state.last_success_rate == 99.0 and state.updated_at == 6.0


def test_too_few_requests_hold_without_a_failure() -> None:
    decision = decide(fresh(), SETTINGS, Sample(requests=19, errors=19), now=2.0)
    assert decision.action == "hold"
    assert decision.state.weights == (90, 10) and decision.state.failures == 0
    assert "too few requests" in decision.reason and "19 requests" in decision.reason


def test_threshold_is_inclusive() -> None:
    assert decide(fresh(), SETTINGS, Sample(requests=100, errors=5), now=1).action == "step"
    assert decide(fresh(), SETTINGS, Sample(requests=100, errors=6), now=1).action == "fail"


def test_max_failures_failed_intervals_roll_back_to_zero() -> None:
    first = decide(fresh((60, 40)), SETTINGS, Sample(requests=100, errors=30), now=2)
    assert (first.action, first.state.weights, first.state.failures) == ("fail", (60, 40), 1)
    assert "success 70.0% of 100 requests (30 5xx)" in first.reason
    second = decide(first.state, SETTINGS, Sample(requests=100, errors=30), now=4)
    assert (second.action, second.state.weights, second.state.phase) == ("rollback", (100, 0), "RolledBack")
    assert decide(second.state, SETTINGS, Sample(100, 0), now=6).action == "none"


def test_failures_count_over_the_whole_rollout() -> None:
    state = decide(fresh(), SETTINGS, Sample(100, 50), now=2).state
    state = decide(state, SETTINGS, Sample(100, 0), now=4).state
    assert state.failures == 1 and state.weights == (60, 40)
    assert decide(state, SETTINGS, Sample(100, 50), now=6).action == "rollback"


def test_paused_rollouts_do_not_move_and_commands_apply() -> None:
    paused = command(fresh(), "pause", now=1)
    assert paused.phase == "Paused"
    assert decide(paused, SETTINGS, Sample(100, 0), now=2).state == paused
    resumed = command(paused, "resume", now=3)
    assert resumed.phase == "Progressing" and resumed.weights == (90, 10)
    assert command(resumed, "promote", now=4).weights == (0, 100)
    aborted = command(resumed, "abort", now=4)
    assert (aborted.weights, aborted.phase) == ((100, 0), "RolledBack")
    with pytest.raises(CommandRefused, match="only a Paused rollout can be resumed"):
        command(resumed, "resume", now=5)
    with pytest.raises(CommandRefused, match="already RolledBack"):
        command(aborted, "abort", now=5)
    with pytest.raises(CommandRefused, match="only a Progressing rollout can be paused"):
        command(aborted, "pause", now=5)
