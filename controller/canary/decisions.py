"""Canary decisions (SPEC 3.4), as pure functions of the state, the analysis settings, one
interval's sample and the time — no I/O, no clock of its own, so every rule is tested
with plain values.

Every `analysis.interval` the runner (`controller.canary.runner`) hands `decide` the
canary's responses over that interval:
- fewer than `minRequests`: hold (no verdict, not a failure);
- success rate (non-5xx share) at or above `threshold`: the canary gains `stepWeight`,
  and at 100 the rollout is Promoted;
- below it: a failed interval; the `maxFailures`-th failed interval of the rollout sets
  the canary to 0 (RolledBack). Failures are counted over the whole rollout, not only
  consecutive ones (as Flagger does): a canary that fails every other interval is not
  promoted by luck.
Paused, Promoted and RolledBack rollouts do not move. Commands from `modelroute rollout`
(`promote`, `abort`, `pause`, `resume`) are `command`.

The state keeps its last HISTORY_KEPT events (`record`: verdicts that moved or failed,
the first of a run of holds, commands) for the experiment page and `describe`; it is
persisted with the rest, so a restart or a new leader shows the same history.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from routing_engine.api.resources import CanaryAnalysis
from routing_engine.api.types import parse_duration_ms

Phase = Literal["Progressing", "Promoted", "RolledBack", "Paused"]
Action = Literal["step", "promote", "hold", "fail", "rollback", "none"]
Command = Literal["promote", "abort", "pause", "resume"]
COMMANDS: tuple[Command, ...] = ("promote", "abort", "pause", "resume")
HISTORY_KEPT = 20
# One history entry: (time, action or command, stable weight, canary weight, message).
Event = tuple[float, str, int, int, str]


class CommandRefused(ValueError):
    """A rollout command that does not apply in the current phase (message says why)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """`spec.canary.analysis` in numbers."""

    threshold: float  # percent
    interval_s: float
    step_weight: int = 10
    max_failures: int = 2
    min_requests: int = 20

    @classmethod
    def from_spec(cls, analysis: CanaryAnalysis) -> Settings:
        return cls(threshold=float(analysis.threshold), interval_s=parse_duration_ms(analysis.interval) / 1000,
                   step_weight=analysis.step_weight, max_failures=analysis.max_failures,
                   min_requests=analysis.min_requests)


@dataclass(frozen=True, slots=True)
class Sample:
    """The canary's responses over one interval."""

    requests: int
    errors: int  # 5xx

    @property
    def success_rate(self) -> float | None:
        return None if self.requests == 0 else 100.0 * (self.requests - self.errors) / self.requests


@dataclass(frozen=True, slots=True)
class CanaryState:
    """One ModelRoute's rollout: what is persisted (embedded: canary.json) and published
    as `status.canary`. `stable`/`canary` name the two destinations ("ns/name"): a
    rollout is of one pair, and a spec naming another pair starts a new rollout."""

    stable: str
    canary: str
    stable_weight: int
    canary_weight: int
    phase: Phase = "Progressing"
    failures: int = 0
    last_success_rate: float | None = None
    last_requests: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    message: str = ""
    history: tuple[Event, ...] = ()

    def __post_init__(self) -> None:
        # Read back from JSON the events are lists: keep them tuples, so states compare equal.
        try:
            events = tuple((float(e[0]), str(e[1]), int(e[2]), int(e[3]), str(e[4])) for e in self.history)
        except (ValueError, IndexError, TypeError) as err:  # what the loaders catch: TypeError
            raise TypeError(f"canary history is malformed: {err}") from err
        object.__setattr__(self, "history", events)

    @property
    def weights(self) -> tuple[int, int]:
        return self.stable_weight, self.canary_weight


def record(state: CanaryState, what: str, *, now: float) -> CanaryState:
    """The state with one more history event (`what`: a decision's action or a command).
    A hold right after a hold is not recorded: a starving rollout would otherwise push
    every other event out."""
    if what == "none" or (what == "hold" and state.history and state.history[-1][1] == "hold"):
        return state
    event: Event = (now, what, state.stable_weight, state.canary_weight, state.message)
    return replace(state, history=(*state.history, event)[-HISTORY_KEPT:])


def start(stable: str, canary: str, weights: tuple[int, int], *, now: float) -> CanaryState:
    begun = CanaryState(stable, canary, weights[0], weights[1], started_at=now, updated_at=now,
                        message=f"rollout started at {weights[0]}/{weights[1]}")
    return record(begun, "start", now=now)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    state: CanaryState
    reason: str


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1f}%"


def decide(state: CanaryState, settings: Settings, sample: Sample, *, now: float) -> Decision:
    """The verdict on one interval (see the module docstring for the rules)."""
    if state.phase != "Progressing":
        return Decision("none", state, f"phase {state.phase}: weights do not move")
    rate = sample.success_rate
    numbers = (f"success {_pct(rate)} of {sample.requests} requests ({sample.errors} 5xx), "
               f"threshold {settings.threshold:g}%, minRequests {settings.min_requests}")
    observed = replace(state, last_success_rate=rate if rate is not None else state.last_success_rate,
                       last_requests=sample.requests, updated_at=now)
    if sample.requests < settings.min_requests or rate is None:
        reason = f"hold at {state.canary_weight}%: too few requests ({numbers})"
        return Decision("hold", replace(observed, message=reason), reason)
    if rate >= settings.threshold:
        weight = min(100, state.canary_weight + settings.step_weight)
        if weight >= 100:
            reason = f"promoted: canary at 100% ({numbers})"
            return Decision("promote", replace(observed, stable_weight=0, canary_weight=100, phase="Promoted",
                                               message=reason), reason)
        reason = f"step {state.canary_weight}% → {weight}% ({numbers})"
        return Decision("step", replace(observed, stable_weight=100 - weight, canary_weight=weight, message=reason),
                        reason)
    failures = state.failures + 1
    if failures >= settings.max_failures:
        reason = f"rolled back: failed interval {failures}/{settings.max_failures} ({numbers})"
        return Decision("rollback", replace(observed, failures=failures, stable_weight=100, canary_weight=0,
                                            phase="RolledBack", message=reason), reason)
    reason = f"failed interval {failures}/{settings.max_failures}, hold at {state.canary_weight}% ({numbers})"
    return Decision("fail", replace(observed, failures=failures, message=reason), reason)


def command(state: CanaryState, what: Command, *, now: float) -> CanaryState:
    """A user's command; raises CommandRefused when it does not apply."""
    if what == "promote":
        if state.phase == "Promoted":
            raise CommandRefused("the canary is already Promoted")
        return replace(state, stable_weight=0, canary_weight=100, phase="Promoted", updated_at=now,
                       message="promoted by the user")
    if what == "abort":
        if state.phase == "RolledBack":
            raise CommandRefused("the canary is already RolledBack")
        return replace(state, stable_weight=100, canary_weight=0, phase="RolledBack", updated_at=now,
                       message="aborted by the user")
    if what == "pause":
        if state.phase != "Progressing":
            raise CommandRefused(f"only a Progressing rollout can be paused (phase is {state.phase})")
        return replace(state, phase="Paused", updated_at=now,
                       message=f"paused by the user at {state.canary_weight}%")
    if what == "resume":
        if state.phase != "Paused":
            raise CommandRefused(f"only a Paused rollout can be resumed (phase is {state.phase})")
        return replace(state, phase="Progressing", updated_at=now,
                       message=f"resumed by the user at {state.canary_weight}%")
    raise CommandRefused(f"unknown command {what!r} (use one of {', '.join(COMMANDS)})")
