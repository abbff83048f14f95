"""Canary rollouts wired into embedded mode (`CanaryWiring`) and Kubernetes mode
(`ClusterCanaryWiring`): stats in, weights out, state in the status.

    Envoy ──statsd/UDP──► StatsListener ──► StatsCollector ──► CanaryRunner ──► ControlLoop
                                                   DIR/.modelroute/rollout/ ──┘   (live weights)

`CanaryWiring` owns the stats listener and the runner for one `Embedded`: it applies the
persisted rollouts' weights before the first push (a restart resumes, SPEC 3.4), hands
the bootstrap its stats-sink block, and joins the runner's state with the status: the
canary group's splits get their roles (stable, canary), the route its `CanaryView`
(phase, weights, last success rate, last decision, A/B report), and its conditions the
runner's `Progressing`/`Degraded`.

`ClusterCanaryWiring` does the same for `modelroute serve --provider kubernetes`: every
replica listens for stats (UDP, and TCP: in a cluster Envoy reaches the control plane by
a Service name, which only the TCP statsd sink resolves); the runner runs on the leader
only (`lead`, a leader task), its state and command acknowledgements go to the
ModelRoute's status and its commands come from an annotation
(`controller.kubernetes.canary`). A replica that is not leading applies the live split
the status shows (`follow`), so every replica serves the leader's weights, and a new
leader resumes from that status.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from envoy.config.metrics.v3 import stats_pb2

from kit.tasks import cancel_and_wait, spawn
from controller.canary.decisions import Event
from controller.canary.commands import COMMANDS_DIR
from controller.canary.runner import CanaryRunner, CanaryStore, state_json
from controller.kubernetes.canary import (NO_ROLLOUT, AnnotationCommands, Routes, StatusStore, live_weights,
                                         route_status, stored_state)
from controller.canary.stats_sink import StatsCollector, StatsListener, StatsTcpListener
from controller.local.status_view import CanaryView, RouteView
from modelroute.control_loop import ControlLoop
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import ObjectStatus
from xds_server.bootstrap import MountedTls, StatsSink
from xds_server.types import type_url

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

    def rollouts(self, views: Sequence[RouteView]) -> tuple[list[RouteView], dict[ObjectKey, tuple[Event, ...]]]:
        """The experiment page's view: routes with their rollout, and each rollout's history."""
        return with_canary(views, self.runner), {k: s.history for k, s in self.runner.states.items()}

    def command(self, key: ObjectKey, what: str) -> tuple[bool, str]:
        return self.runner.handle(key, what)


def tcp_stats_sink(host: str, port: int, *, flush_interval_ms: int = 1000,
                   tls: MountedTls | None = None) -> dict[str, Any]:
    """Bootstrap fields for Envoy's TCP statsd sink to `host:port` (a DNS name is fine: it
    goes through the STRICT_DNS cluster `modelroute_stats`); with `tls`, over mTLS with the
    gateway's certificate (a cluster's stats listener hears nobody else). Merge with
    `merge_stats_sink`."""
    # V4_PREFERRED: the control plane listens on IPv4 (0.0.0.0); a name with an IPv6 address
    # too (e.g. localhost) must not pick that one.
    cluster = {"name": "modelroute_stats", "type": "STRICT_DNS", "connect_timeout": "1s",
               "dns_lookup_family": "V4_PREFERRED",
               "load_assignment": {"cluster_name": "modelroute_stats", "endpoints": [{"lb_endpoints": [
                   {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}]}]}}
    if tls is not None:
        cluster["transport_socket"] = tls.transport_socket(grpc=False)
    sink = {"name": "envoy.stat_sinks.statsd", "typed_config": {
        "@type": type_url(stats_pb2.StatsdSink), "tcp_cluster_name": "modelroute_stats"}}
    return {"stats_sinks": [sink], "stats_flush_interval": f"{flush_interval_ms / 1000:.3f}s", "cluster": cluster}


def merge_stats_sink(bootstrap: dict[str, Any], sink: dict[str, Any]) -> dict[str, Any]:
    """`bootstrap` (a rendered dict) with the sink of `tcp_stats_sink` added."""
    out = dict(bootstrap)
    static = dict(out.get("static_resources") or {})
    static["clusters"] = [*static.get("clusters", []), sink["cluster"]]
    out["static_resources"] = static
    out["stats_sinks"] = sink["stats_sinks"]
    out["stats_flush_interval"] = sink["stats_flush_interval"]
    return out


class ClusterCanaryWiring:
    def __init__(self, loop: ControlLoop, routes: Routes, *, stats_host: str = "127.0.0.1", stats_port: int = 0,
                 follow_s: float = 0.25, poll_s: float = 0.1, stats_tls: ssl.SSLContext | None = None,
                 version: Callable[[], object] | None = None) -> None:
        """`version` changes whenever a route does (the routes informer's resourceVersion;
        None: read the routes at every poll)."""
        self.stats = StatsCollector()
        # With TLS (mTLS with the gateways) stats come over TCP only: UDP cannot tell a
        # gateway's datagram from a forged one.
        self.udp: StatsListener | None = None if stats_tls else StatsListener(self.stats, host=stats_host, port=stats_port)
        self.tcp = StatsTcpListener(self.stats, host=stats_host, port=stats_port, tls=stats_tls)
        self._loop = loop
        self._routes = routes
        self._version = version
        self._follow_s = follow_s
        self._poll_s = poll_s
        self._objects: tuple[Resource, ...] = ()
        self._published = asyncio.Event()  # the provider's first snapshot arrived
        self.runner: CanaryRunner | None = None
        self.commands: AnnotationCommands | None = None
        self._followed: dict[ObjectKey, tuple[int, int]] | None = None
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        """Listen for stats on one port, UDP and TCP (port 0: TCP picks, UDP follows)."""
        self.tcp.port = await self.tcp.start()
        if self.udp is not None:
            self.udp.port = self.tcp.port
            await self.udp.start()
        self._task = spawn(self.follow(), name="canary-follower")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self.udp is not None:
            self.udp.close()
        await self.tcp.close()

    @property
    def port(self) -> int:
        return self.tcp.port

    def set_routes(self, objects: Sequence[Resource]) -> None:
        self._objects = tuple(objects)
        self._published.set()
        if self.runner is not None:
            self.runner.set_routes(self._objects)

    async def lead(self) -> None:
        """The runner, while this replica leads: resumes from the statuses once the provider
        published (every informer listed: an empty world would end every rollout), and is
        dropped (its state is in the status) when leadership ends."""
        await self._published.wait()
        self.commands = AnnotationCommands(self._routes, on_answer=self._loop.publish_status, version=self._version)
        runner = CanaryRunner(store=StatusStore(self._routes), stats=self.stats,
                              apply_weights=self._loop.set_live_weights, on_change=self._loop.publish_status,
                              commands=self.commands, poll_s=self._poll_s)
        self._loop.set_live_weights(runner.live_weights())
        runner.set_routes(self._objects)
        self.runner = runner
        try:
            await runner.run()
        finally:
            self.runner = None
            self._followed = None
            self.tcp.drop_connections()  # the gateways' stats go to the next leader

    async def follow(self) -> None:
        """While not leading: apply the live split the statuses show."""
        read_at: object = None  # the routes' version the weights followed were read at
        while True:
            if self.runner is None:
                version = self._version() if self._version is not None else None
                if version is None or version != read_at or self._followed is None:
                    weights = live_weights(self._routes())
                    if weights != self._followed:
                        self._followed = weights
                        self._loop.set_live_weights(weights)
                    read_at = version
            await asyncio.sleep(self._follow_s)

    def status(self, statuses: Mapping[ObjectKey, ObjectStatus]
               ) -> tuple[Mapping[ObjectKey, ObjectStatus], dict[ObjectKey, Mapping[str, Any]]]:
        """Statuses with the rollout conditions, and the canary's status fields per ModelRoute
        (none while not leading: only the leader's runner knows them)."""
        runner, commands = self.runner, self.commands
        if runner is None or commands is None:
            return statuses, {}
        extras: dict[ObjectKey, Mapping[str, Any]] = {}
        for key in statuses:
            if key.kind == "ModelRoute":
                state, ack, report = runner.state_of(key), commands.acks.get(key), runner.reports.get(key)
                extras[key] = NO_ROLLOUT if state is None and ack is None and report is None else route_status(
                    state, state_json(state) if state is not None else None, ack, report)
        return with_canary_conditions(statuses, runner), extras

    def rollouts(self, views: Sequence[RouteView]) -> tuple[list[RouteView], dict[ObjectKey, tuple[Event, ...]]]:
        """The experiment page's view: from the runner while leading, else from the
        statuses the leader wrote (what every replica's informer caches)."""
        runner = self.runner
        if runner is not None:
            return with_canary(views, runner), {k: s.history for k, s in runner.states.items()}
        by_key = {(str((o.get("metadata") or {}).get("namespace") or "default"),
                   str((o.get("metadata") or {}).get("name"))): o for o in self._routes()}
        out, histories = [], {}
        for view in views:
            obj = by_key.get((view.key.namespace, view.key.name))
            status = (obj or {}).get("status") or {}
            canary, rollout = status.get("canary"), status.get("rollout") or {}
            if not isinstance(canary, dict) or not isinstance(canary.get("canaryWeight"), int):
                out.append(view)
                continue
            try:
                state = stored_state(obj or {})
            except TypeError:
                state = None
            histories[view.key] = state.history if state is not None else ()
            roles = {state.stable: "stable", state.canary: "canary"} if state is not None else {}
            groups = tuple(
                replace(g, splits=tuple(replace(s, role=roles.get(s.destination)) for s in g.splits))
                if roles and {s.destination for s in g.splits} == set(roles) else g
                for g in view.groups)
            out.append(replace(view, groups=groups, canary=CanaryView(
                stable_weight=int(canary.get("stableWeight", 0)), canary_weight=int(canary["canaryWeight"]),
                phase=str(canary.get("phase", "")), last_success_rate=canary.get("lastSuccessRate"),
                failed_intervals=int(canary.get("failedIntervals", 0)), message=str(canary.get("message", "")),
                report=rollout.get("report") if isinstance(rollout.get("report"), dict) else None)))
        return out, histories

    def command(self, key: ObjectKey, what: str) -> tuple[bool, str] | None:
        """Apply a command while leading; None on a follower (only the leader's runner acts)."""
        return None if self.runner is None else self.runner.handle(key, what)


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
