"""The canary runner: every `analysis.interval`, per ModelRoute with `canary.enabled`,
read the canary's responses of the interval from the stats Envoys pushed, decide
(`controller.canary.decisions.decide`), apply the weights live, log the decision with its numbers,
and publish the state.

- Targets come from the specs (`set_routes`), as the engine groups them
  (`routing_engine.canaries`: the group with exactly two destinations is stable then
  canary, SPEC 3.4). They are read before the control loop compiles the same objects, so
  a new rollout's weights are in place for the first compile of its route. A rollout is
  of one (stable, canary) pair; a spec that names another pair starts a new rollout at
  the engine's start weights (`trafficSplit`, default 90/10); a spec without
  `canary.enabled` ends it and the spec's own weights apply again.
- Weights go out through `apply_weights` (the control loop's `set_live_weights`: the
  engine replaces the group's split, the spec is never rewritten).
- The state is persisted (`StateStore`: embedded `CanaryStore`, JSON, atomic; in a
  cluster the ModelRoute's status) after every change and loaded at start, so a
  restarted control plane resumes the rollout where it was — with the live weights
  applied before its first push — instead of starting over. After a restart the
  first verdict waits one full interval (the stats of the old process are gone).
- `modelroute rollout` commands arrive through a `CommandQueue` (embedded: the file queue
  of `controller.canary.commands`; in a cluster: an annotation on the ModelRoute).
- Without `analysis`, the split is a plain A/B experiment: nothing moves by itself, the
  report is still kept, and promote/abort still work.
- What is measured is the canary ModelServer's cluster on every Envoy that pushes stats:
  requests reaching that server by another route count too, and each retry attempt is
  counted (a 503 retried to success is one 5xx and one 2xx) — conservative for a canary.
- An interval held for too few requests says so: `Degraded=True (InsufficientTraffic)`
  with the numbers (requests seen, what the route's traffic at this weight would need)
  and what to change, until a verdict is reached again. A canary that can never collect
  `minRequests` at its weight would otherwise hold forever without a word.
- The A/B report (`controller.canary.ab_report`) is refreshed at every verdict (every
  REPORT_EVERY_S without analysis); its sequential test (`controller.canary.ab_test`) is fed the
  counts of each refresh's own interval, up to the last complete stats bucket, so no
  request is counted twice or lost between two looks.
- Per route, the decisions taken are counted (`decisions`) for the Prometheus series.

The clock is injectable and `tick()`/`poll_commands()` are plain methods, so tests drive
the runner with a fake clock and fake stats; `run()` just calls them periodically.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from controller.canary import commands as canary_commands
from controller.canary.ab_report import build_report, counts
from controller.canary.ab_test import SequentialTest
from controller.canary.decisions import (COMMANDS, CanaryState, CommandRefused, Sample, Settings, command, decide, record,
                               start)
from kit.files import write_json_atomically
from controller.canary.stats_sink import RESOLUTION_S, VariantWindow
from routing_engine import names
from routing_engine.api.resources import ModelRoute, ObjectKey, Resource
from routing_engine.canaries import canary_groups
from routing_engine.world import CanaryGroup, ConditionView

log = logging.getLogger(__name__)

STORE_VERSION = 1
REPORT_EVERY_S = 5.0  # report refresh for A/B splits without analysis


class StateStore(Protocol):
    def load(self) -> dict[ObjectKey, CanaryState]: ...

    def save(self, states: Mapping[ObjectKey, CanaryState]) -> None: ...


class CommandQueue(Protocol):
    def claim_all(self) -> Iterable[canary_commands.RolloutCommand | str]: ...

    def answer(self, cmd_id: str, *, ok: bool, message: str, canary: dict[str, Any] | None = None) -> None: ...


class StatsSource(Protocol):
    def window(self, clusters: Iterable[str], *, since: float, until: float | None = None) -> dict[str, VariantWindow]: ...


@dataclass(frozen=True, slots=True)
class CanaryPair:
    """What the spec says about one route's canary (the engine's `CanaryGroup`), with its
    analysis in numbers."""

    stable: ObjectKey
    canary: ObjectKey
    start: tuple[int, int]
    settings: Settings | None  # None: no analysis (A/B experiment)

    @classmethod
    def of(cls, group: CanaryGroup) -> CanaryPair:
        settings = Settings.from_spec(group.analysis) if group.analysis is not None else None
        return cls(group.stable, group.canary, group.start, settings)


def _name(key: ObjectKey) -> str:
    return f"{key.namespace}/{key.name}"


def parse_route_key(text: str) -> ObjectKey:
    namespace, _, name = text.rpartition("/")
    return ObjectKey(ModelRoute.KIND, namespace or "default", name)


def starved_message(settings: Settings, weight: int, seen: int, route_requests: int) -> str:
    """Why an interval held, with what it would take: the route's requests of the interval
    (both variants) at this weight give the expected canary share."""
    interval = f"{settings.interval_s:g}s"
    if route_requests and weight:
        expected = route_requests * weight / 100
        needed = settings.min_requests * 100 / weight
        outlook = (f"the route had {route_requests} requests in the interval, about {expected:.0f} for the canary at "
                   f"{weight}%; it needs about {needed:.0f} per interval at this weight")
    else:
        outlook = f"the route had {route_requests} requests in the interval"
    return (f"the canary got {seen} of minRequests {settings.min_requests} in its {interval} interval at {weight}%, "
            f"so the rollout holds: {outlook}. Lengthen analysis.interval, lower analysis.minRequests, or give the "
            f"canary more traffic (trafficSplit, stepWeight)")


class CanaryStore:
    """`canary.json`: every route's rollout state (what `status.canary` shows, plus the
    failure count and the destinations it is about)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[ObjectKey, CanaryState]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.error("canary state unreadable, rollouts start over: path=%s error=%s", self.path, err)
            return {}
        if not isinstance(doc, dict) or doc.get("version") != STORE_VERSION:
            log.error("canary state has an unknown format, rollouts start over: path=%s", self.path)
            return {}
        states: dict[ObjectKey, CanaryState] = {}
        for entry in doc.get("routes", []):
            try:
                key = ObjectKey(ModelRoute.KIND, entry["namespace"], entry["name"])
                states[key] = CanaryState(**entry["state"])
            except (KeyError, TypeError) as err:  # TypeError: unknown fields, malformed history
                log.error("canary state entry skipped: entry=%r error=%s", entry, err)
        return states

    def save(self, states: Mapping[ObjectKey, CanaryState]) -> None:
        doc = {"version": STORE_VERSION, "routes": [
            {"namespace": k.namespace, "name": k.name, "state": asdict(s)} for k, s in sorted(states.items())]}
        write_json_atomically(self.path, doc)


def state_json(state: CanaryState) -> dict[str, Any]:
    return {"stableWeight": state.stable_weight, "canaryWeight": state.canary_weight, "phase": state.phase,
            "lastSuccessRate": state.last_success_rate, "failedIntervals": state.failures,
            "message": state.message}


class CanaryRunner:
    def __init__(self, *, store: StateStore, stats: StatsSource,
                 apply_weights: Callable[[Mapping[ObjectKey, tuple[int, int]]], None],
                 on_change: Callable[[], None] = lambda: None, commands_dir: Path | None = None,
                 commands: CommandQueue | None = None,
                 clock: Callable[[], float] = time.time, poll_s: float = 0.1) -> None:
        """Commands come from `commands`, or the file queue in `commands_dir`."""
        self._store = store
        self._stats = stats
        self._apply = apply_weights
        self._on_change = on_change
        self._commands: CommandQueue | None = commands if commands is not None else (
            canary_commands.FileCommands(commands_dir) if commands_dir is not None else None)
        self._clock = clock
        self.poll_s = poll_s
        self.states: dict[ObjectKey, CanaryState] = store.load()
        self._targets: dict[ObjectKey, CanaryPair] = {}
        now = clock()
        # Whatever was persisted resumes: its next verdict is one interval from now.
        self._window_start: dict[ObjectKey, float] = {k: now for k in self.states}
        self._reported_at: dict[ObjectKey, float] = {}
        self.reports: dict[ObjectKey, dict[str, Any]] = {}
        # The sequential test of each rollout and the end of the last interval it was fed.
        self._tests: dict[ObjectKey, tuple[SequentialTest, float]] = {}
        self.starved: dict[ObjectKey, str] = {}  # routes whose last interval held for lack of requests
        self.decisions: dict[tuple[ObjectKey, str], int] = {}  # (route, action) → count, since start
        self._applied: dict[ObjectKey, tuple[int, int]] | None = None

    # --- inputs ---------------------------------------------------------------------

    def live_weights(self) -> dict[ObjectKey, tuple[int, int]]:
        return {k: s.weights for k, s in self.states.items()}

    def set_routes(self, objects: Iterable[Resource]) -> None:
        """Reconcile rollouts with the specs: start, keep, restart or end each one."""
        now = self._clock()
        targets = {key: CanaryPair.of(group) for key, group in canary_groups(objects).items()}
        self._targets = targets
        changed = False
        for key in [k for k in self.states if k not in targets]:
            log.info("canary rollout ended (canary disabled or route gone): route=%s", key,
                     extra={"route": str(key)})
            del self.states[key]
            self.reports.pop(key, None)
            self._tests.pop(key, None)
            self.starved.pop(key, None)
            changed = True
        for key, target in targets.items():
            state = self.states.get(key)
            pair = (_name(target.stable), _name(target.canary))
            if state is not None and (state.stable, state.canary) == pair:
                continue
            self.states[key] = start(*pair, target.start, now=now)
            self._window_start[key] = now
            self._tests.pop(key, None)
            self.starved.pop(key, None)
            log.info("canary rollout started: route=%s stable=%s canary=%s weights=%d/%d", key, pair[0], pair[1],
                     *target.start, extra={"route": str(key)})
            changed = True
        if changed:
            self._commit()

    # --- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                self.poll_commands()
                self.tick()
            except Exception:
                log.exception("canary runner step failed")
            await asyncio.sleep(self.poll_s)

    def tick(self) -> None:
        """Decide every rollout whose interval has elapsed."""
        now = self._clock()
        changed = False
        for key, target in self._targets.items():
            state = self.states.get(key)
            if state is None:
                continue
            since = self._window_start.setdefault(key, now)
            if target.settings is None:
                if now - self._reported_at.get(key, 0.0) >= REPORT_EVERY_S:
                    self._refresh_report(key, target, state, now)
                    changed = True
                continue
            if now - since < target.settings.interval_s:
                continue
            self._window_start[key] = now
            if state.phase != "Progressing":
                self._refresh_report(key, target, state, now)
                changed = True
                continue
            windows = self._stats.window([names.backend(target.canary), names.backend(target.stable)],
                                         since=since, until=now)
            seen = windows[names.backend(target.canary)]
            sample = Sample(requests=seen.requests, errors=seen.errors)
            decision = decide(state, target.settings, sample, now=now)
            new = record(decision.state, decision.action, now=now)
            self.decisions[(key, decision.action)] = self.decisions.get((key, decision.action), 0) + 1
            if decision.action == "hold":
                self.starved[key] = starved_message(target.settings, state.canary_weight, seen.requests,
                                                    seen.requests + windows[names.backend(target.stable)].requests)
            else:
                self.starved.pop(key, None)
            log.info("canary decision: route=%s action=%s weights=%d/%d→%d/%d success=%s requests=%d errors=%d "
                     "failures=%d/%d interval=%gs reason=%s", key, decision.action, *state.weights, *new.weights,
                     "n/a" if sample.success_rate is None else f"{sample.success_rate:.2f}%", sample.requests,
                     sample.errors, new.failures, target.settings.max_failures, target.settings.interval_s,
                     decision.reason,
                     extra={"route": str(key), "action": decision.action, "canary_weight": new.canary_weight,
                            "success_rate": sample.success_rate, "requests": sample.requests})
            self.states[key] = new
            self._refresh_report(key, target, new, now)
            changed = True
        if changed:
            self._commit()

    def _refresh_report(self, key: ObjectKey, target: CanaryPair, state: CanaryState, now: float) -> None:
        stable, canary = names.backend(target.stable), names.backend(target.canary)
        test, tested_until = self._tests.get(key, (SequentialTest(), state.started_at))
        until = max(tested_until, RESOLUTION_S * (now // RESOLUTION_S))  # complete stats buckets only
        look = self._stats.window([stable, canary], since=tested_until, until=until)
        test = test.update(*counts(look[stable]), *counts(look[canary]))
        self._tests[key] = (test, until)
        windows = self._stats.window([stable, canary], since=state.started_at, until=now + 1)
        report = build_report(windows[stable], windows[canary], test=test, names=(state.stable, state.canary))
        self.reports[key] = report.to_json()
        self._reported_at[key] = now

    def poll_commands(self) -> None:
        if self._commands is None:
            return
        for cmd in self._commands.claim_all():
            if isinstance(cmd, str):
                self._commands.answer(cmd, ok=False, message="malformed command")
                continue
            ok, message = self.handle(parse_route_key(cmd.route), cmd.command)
            state = self.states.get(parse_route_key(cmd.route))
            self._commands.answer(cmd.id, ok=ok, message=message,
                                  canary=state_json(state) if state is not None else None)

    def handle(self, key: ObjectKey, what: str) -> tuple[bool, str]:
        """Apply a user's command; (applied, message)."""
        state = self.states.get(key)
        if state is None:
            return False, f"ModelRoute {key.namespace}/{key.name} has no canary rollout (canary.enabled with two destinations)"
        if what not in COMMANDS:
            return False, f"unknown command {what!r} (use one of {', '.join(COMMANDS)})"
        now = self._clock()
        try:
            new = command(state, what, now=now)
        except CommandRefused as err:
            return False, f"ModelRoute {key.namespace}/{key.name}: {err}"
        self.states[key] = record(new, what, now=now)
        self._window_start[key] = now  # a resumed rollout judges a fresh interval
        self.starved.pop(key, None)
        log.info("canary command: route=%s command=%s weights=%d/%d→%d/%d phase=%s", key, what, *state.weights,
                 *new.weights, new.phase, extra={"route": str(key), "command": what})
        self._commit()
        return True, f"ModelRoute {key.namespace}/{key.name}: {new.message} ({new.stable_weight}/{new.canary_weight}, {new.phase})"

    def _commit(self) -> None:
        """Persist, push weights if they changed, tell the status writer."""
        self._store.save(self.states)
        weights = self.live_weights()
        if weights != self._applied:
            self._applied = weights
            self._apply(weights)
        try:
            self._on_change()
        except Exception:
            log.exception("canary status callback failed")

    # --- outputs --------------------------------------------------------------------

    def conditions(self) -> dict[ObjectKey, tuple[ConditionView, ...]]:
        """Progressing (and Degraded after a rollback) for each route with a rollout."""
        out: dict[ObjectKey, tuple[ConditionView, ...]] = {}
        for key, s in self.states.items():
            split = f"stable {s.stable_weight}% / canary {s.canary_weight}%: {s.message}"
            if s.phase == "Progressing" and key in self.starved:
                out[key] = (ConditionView("Progressing", "True", "CanaryProgressing", split),
                            ConditionView("Degraded", "True", "InsufficientTraffic", self.starved[key]))
            elif s.phase == "Progressing":
                out[key] = (ConditionView("Progressing", "True", "CanaryProgressing", split),)
            elif s.phase == "Paused":
                out[key] = (ConditionView("Progressing", "Unknown", "CanaryPaused", split),)
            elif s.phase == "Promoted":
                out[key] = (ConditionView("Progressing", "False", "CanaryPromoted", split),)
            else:
                out[key] = (ConditionView("Progressing", "False", "CanaryRolledBack", split),
                            ConditionView("Degraded", "True", "CanaryRolledBack", split))
        return out

    def state_of(self, key: ObjectKey) -> CanaryState | None:
        return self.states.get(key)
