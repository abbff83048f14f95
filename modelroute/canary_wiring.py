"""Canary rollouts wired into embedded mode: stats in, weights out, state in the status.

    Envoy ──statsd/UDP──► StatsListener ──► StatsCollector ──► CanaryRunner ──► ControlLoop
                                                   DIR/.modelroute/rollout/ ──┘   (live weights)

`CanaryWiring` owns the stats listener and the runner for one `Embedded`: it applies the
persisted rollouts' weights before the first push (a restart resumes, SPEC 3.4), hands
the bootstrap its stats-sink block, and joins the runner's state with the status: the
canary group's splits get their roles (stable, canary), the route its `CanaryView`
(phase, weights, last success rate, last decision, A/B report), and its conditions the
runner's `Progressing`/`Degraded`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from controller.background import cancel_and_wait, spawn
from controller.canary_commands import COMMANDS_DIR
from controller.canary_runner import CanaryRunner, CanaryStore
from controller.stats_sink import StatsCollector, StatsListener
from controller.status_view import CanaryView, RouteView
from modelroute.control_loop import ControlLoop
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import ObjectStatus
from xds_server.bootstrap import StatsSink

CANARY_FILE = "canary.json"
# Envoy flushes counters this often: a verdict's window is accurate to it, so it is well
# below the shortest interval worth using (1 s).
STATS_FLUSH_MS = 250


class CanaryWiring:
    def __init__(self, run_dir: Path, loop: ControlLoop, *, flush_ms: int = STATS_FLUSH_MS) -> None:
        self.stats = StatsCollector()
        self.listener = StatsListener(self.stats)
        self.flush_ms = flush_ms
        self.runner = CanaryRunner(store=CanaryStore(run_dir / CANARY_FILE), stats=self.stats,
                                   apply_weights=loop.set_live_weights, on_change=loop.publish_status,
                                   commands_dir=run_dir / COMMANDS_DIR)
        loop.set_live_weights(self.runner.live_weights())
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        await self.listener.start()
        self._task = spawn(self.runner.run(), name="canary-runner")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self.listener.close()

    def stats_sink(self) -> dict[str, Any]:
        """Bootstrap fields that make an Envoy push its stats here (merge into the dict)."""
        block: dict[str, Any] = yaml.safe_load(StatsSink(port=self.listener.port, flush_interval_ms=self.flush_ms).block())
        return block

    def set_routes(self, objects: Iterable[Resource]) -> None:
        self.runner.set_routes(objects)

    def status(self, statuses: Mapping[ObjectKey, ObjectStatus],
               views: Sequence[RouteView]) -> tuple[Mapping[ObjectKey, ObjectStatus], list[RouteView]]:
        return with_canary_conditions(statuses, self.runner), with_canary(views, self.runner)


def with_canary(views: Sequence[RouteView], runner: CanaryRunner) -> list[RouteView]:
    out = []
    for view in views:
        state = runner.state_of(view.key)
        if state is None:
            out.append(view)
            continue
        roles = {state.stable: "stable", state.canary: "canary"}
        groups = tuple(
            replace(g, splits=tuple(replace(s, role=roles[s.destination]) for s in g.splits))
            if {s.destination for s in g.splits} == set(roles) else g
            for g in view.groups)
        canary = CanaryView(stable_weight=state.stable_weight, canary_weight=state.canary_weight, phase=state.phase,
                            last_success_rate=None if state.last_success_rate is None
                            else round(state.last_success_rate, 2),
                            failed_intervals=state.failures, message=state.message,
                            report=runner.reports.get(view.key))
        out.append(replace(view, groups=groups, canary=canary))
    return out


def with_canary_conditions(statuses: Mapping[ObjectKey, ObjectStatus],
                           runner: CanaryRunner) -> Mapping[ObjectKey, ObjectStatus]:
    """Statuses with each rollout's conditions replacing any of the same type."""
    conditions = runner.conditions()
    if not conditions:
        return statuses
    merged = dict(statuses)
    for key, extra in conditions.items():
        status = merged.get(key)
        if status is None:
            continue
        types = {c.type for c in extra}
        merged[key] = replace(status, conditions=(*(c for c in status.conditions if c.type not in types), *extra))
    return MappingProxyType(merged)
