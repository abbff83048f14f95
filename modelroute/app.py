"""The application: one assembly of the control plane, whatever the source of the world.

    Provider ──ProviderState──► App ──► ControlLoop ──► xDS control plane ──► Envoys
    (files | cluster | …)        │ ▲        │ on_compiled ──► rate-limit service's limits
                                 │ │        └─ statuses ───► StatusSink (status file | API server)
         WorkloadRuntime ◄─state─┘ └─ endpoints of the replicas it runs
         canary wiring (stats in, live weights out), engine probe, admin server

`App` builds and wires what every run mode shares: the metrics registry, tracing, the
control loop, the engine probe, the rate-limit service, the xDS control plane, the admin
server (health, readiness, metrics, experiment page) and the canary wiring's lifecycle.
A run mode (`modelroute.embedded`, `modelroute.kubernetes_mode`) differs only in what it
plugs in (`plug`): which provider, which workload runtime, which status sink (and the
canary wiring that keeps its rollout state where its statuses are). Around the app it
starts what only it has: embedded mode its instance lock, gateway Envoy and
redis-server; a cluster its webhook and certificates.

One provider state (`_on_state`):
- the first attaches the snapshot cache: the loop may have compiled an empty world
  before it, which no Envoy may be served (in a cluster the informers were listing);
- when its objects changed: the canary first (a rollout's weights are in place for the
  compile of its route), then the control loop and the engine probe; the canary runner
  and the probe get only the objects they read (routes with a canary and the
  ModelServers; ModelInfers and load-aware ModelServers), picked per part of the state
  (`PartsFilter`): an edit of one file costs that file, not a pass over the world;
- endpoints: the provider's, with the workload runtime's replacing them for the
  ModelInfers it runs, through the engine probe to the control loop;
- the workload runtime gets the state (embedded: replicas started, scaled, stopped; a
  cluster: the leader's gateway Services and ValidationFailed statuses);
- when its errors changed, the statuses are published again (a broken save is in the
  status although no object changed).

The shared rate-limit service is fed from the engine's output: every gateway compile's
limits per destination cluster (`ControlLoop.on_compiled`), before Envoy has the config.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from controller.canary.decisions import Event
from controller.canary.experiment_metrics import CanaryCollector, VariantCollector
from controller.canary.runner import CanaryRunner
from controller.canary.stats_sink import StatsCollector
from controller.engines.probe import EngineProbe, probe_input
from controller.local.instance import split_address
from controller.local.status_view import RouteView
from controller.provider import Endpoints, PartsFilter, Provider, ProviderState
from controller.ratelimit.limits import cluster_limits
from controller.ratelimit.service import RunningService, ServiceOptions, start_ratelimit_service
from kit.tasks import cancel_and_wait, spawn
from modelroute.control_loop import ControlLoop, latency_first_switching
from modelroute.experiment_page import ExperimentSource, add_routes
from modelroute.metrics import ControlPlaneMetrics
from modelroute.route_views import route_views
from modelroute.targets import GATEWAY, Placement
from modelroute.tracing import tracing
from routing_engine.api.resources import ModelRoute, ModelServer, ObjectKey, Resource
from routing_engine.plugins import Plugin
from routing_engine.world import Compiled, ObjectStatus
from xds_server import ControlPlane, Hooks, start_control_plane
from xds_server.http import admin_app, start_admin
from xds_server.identity import authorized_group
from xds_server.tls import ServerTls


class StatusSink(Protocol):
    """Where the statuses go: embedded mode's status file, a cluster's API server."""

    def publish(self, compiled: Compiled, statuses: Mapping[ObjectKey, ObjectStatus]) -> Awaitable[None] | None:
        """Every object's status (`Programmed` and quarantines included) and the gateway
        compile they come from; after compiles, Envoy verdicts and `loop.publish_status()`,
        coalesced, in a task of its own (never on the push path). The latest provider
        state is `App.state`."""


class WorkloadRuntime(Protocol):
    """What runs the world's ModelInfers, when the control plane runs them itself or
    tells someone to (a cluster). Endpoints of the replicas it runs go to
    `App.workload_endpoints`."""

    async def start(self) -> None:
        """Called before the provider starts."""

    async def apply(self, state: ProviderState) -> None:
        """The provider's newest state: converge what runs to it."""

    async def close(self) -> None:
        """Stop; called once the provider stopped and while the control plane still
        serves (a replica is drained before it stops)."""


class Canary(Protocol):
    """A run mode's canary wiring (`modelroute.canary_wiring`): stats in, live weights out."""

    @property
    def stats(self) -> StatsCollector: ...

    @property
    def runner(self) -> CanaryRunner | None:
        """The rollout runner while this instance runs rollouts (a cluster: the leader)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def set_routes(self, objects: Sequence[Resource]) -> None: ...

    def rollouts(self, views: Sequence[RouteView]) -> tuple[list[RouteView], dict[ObjectKey, tuple[Event, ...]]]: ...

    def command(self, key: ObjectKey, what: str) -> tuple[bool, str] | None: ...


@dataclass(frozen=True, slots=True)
class AppOptions:
    mode: str  # what the experiment page says this runs as: embedded | kubernetes
    placement: Placement
    xds_address: str  # HOST:PORT (port 0: a free one)
    ratelimit_address: str  # HOST:PORT of the rate-limit service (rateLimit.global)
    ratelimit: ServiceOptions = field(default_factory=ServiceOptions)
    admin_address: str = "127.0.0.1:0"  # /healthz /readyz /metrics /debug/nodes /experiments
    experiment_token: str | None = None  # None: the experiment page is read-only
    # The translator's feature plugins (None: built-in plus the `modelroute.plugins` entry points).
    plugins: tuple[Plugin, ...] | None = None
    otlp_endpoint: str | None = None  # OpenTelemetry collector (OTLP/gRPC HOST:PORT); None: no tracing
    trace_sampling: float = 100.0  # percent of new requests the gateways trace


@dataclass(frozen=True, slots=True)
class _Plugs:
    provider: Provider
    status: StatusSink
    canary: Canary
    workloads: WorkloadRuntime | None
    hooks: tuple[Hooks, ...]
    ready: Callable[[], bool]


class App:
    """`App(options)`, then `plug(...)` (the run mode's parts, which may need `loop`),
    then `await start()` … `await stop()`."""

    def __init__(self, options: AppOptions, *, tls: ServerTls | None = None) -> None:
        """`tls`: mTLS with the gateways on the xDS and rate-limit ports (None: plaintext)."""
        self.options = options
        self.tls = tls
        # One registry per instance: its /metrics shows this control plane only, and tests may
        # run several in one process.
        self.registry = CollectorRegistry()
        self.metrics = ControlPlaneMetrics(self.registry)
        self.tracer, plugins = tracing(options.otlp_endpoint, options.trace_sampling, options.plugins)
        self.loop = ControlLoop(placement=options.placement, on_status=self._publish_status, plugins=plugins,
                                metrics=self.metrics, tracer=self.tracer)
        self.loop.on_compiled(self._set_limits)
        # endpoints (the provider's, the workload runtime's) → what the engines report
        # (adapters, load) → the control loop
        self.probe = EngineProbe(self.loop.set_endpoints)
        self.state: ProviderState | None = None  # the provider's latest
        self.plane: ControlPlane | None = None
        self.ratelimit: RunningService | None = None
        self.admin: web.AppRunner | None = None
        self.admin_port: int | None = None
        self._plugs: _Plugs | None = None
        self._workload_endpoints: Endpoints = MappingProxyType({})
        self._tasks: list[asyncio.Task[None]] = []
        self._canary_routes = PartsFilter(_has_canary)
        self._servers = PartsFilter(lambda o: isinstance(o, ModelServer))
        self._probed = PartsFilter(probe_input)

    def plug(self, *, provider: Provider, status: StatusSink, canary: Canary,
             workloads: WorkloadRuntime | None = None, hooks: Sequence[Hooks] = (),
             ready: Callable[[], bool] = lambda: True) -> None:
        """The run mode's parts: `hooks` see every xDS stream event (besides the loop's),
        `ready` is what else `/readyz` waits for (certificates)."""
        self._plugs = _Plugs(provider, status, canary, workloads, tuple(hooks), ready)
        self.registry.register(VariantCollector(canary.stats))
        self.registry.register(CanaryCollector(lambda: canary.runner))

    @property
    def plugs(self) -> _Plugs:
        if self._plugs is None:
            raise RuntimeError("App.plug() was not called")
        return self._plugs

    async def start(self, *, wait_compiled: float | None = None) -> None:
        """Serve, then start the provider. With `wait_compiled` (seconds): return once a
        compile after the provider's start is pushed (a directory publishes its first
        state while it starts); raises asyncio.TimeoutError."""
        plugs, options, tls = self.plugs, self.options, self.tls
        latency_first_switching()
        # Credentials of their own for each server: each tracks which material it was given.
        self.ratelimit = await start_ratelimit_service(options.ratelimit_address, options.ratelimit,
                                                       credentials=tls.credentials() if tls else None)
        await self.tracer.start()
        self.plane = await start_control_plane(xds_address=options.xds_address, admin_host=None,
                                               authorize=authorized_group, hooks=[self.loop.hooks, *plugs.hooks],
                                               registry=self.registry, credentials=tls.credentials() if tls else None)
        host, port = split_address(options.admin_address)
        app = admin_app(ready=self.ready, debug=self.plane.debug, registry=self.registry)
        add_routes(app, self.experiments())
        self.admin, self.admin_port = await start_admin(app, host, port)
        await plugs.canary.start()
        self._tasks = [spawn(self.loop.debouncer.run(), name="control-loop"),
                       spawn(self.probe.run(), name="engine-probe")]
        if plugs.workloads is not None:
            await plugs.workloads.start()
        before = self.loop.generation
        await plugs.provider.start(self._on_state)
        if wait_compiled is not None:
            await self.loop.wait_pushed(before, timeout=wait_compiled)

    async def stop(self) -> None:
        """Stop the provider, then the workload runtime (its replicas drain while xDS is
        still served), then everything else. Safe after a failed or partial start."""
        plugs = self._plugs
        if plugs is not None:
            await plugs.provider.close()
            if plugs.workloads is not None:
                await plugs.workloads.close()
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        await self.probe.close()
        await self.loop.close()
        if plugs is not None:
            await plugs.canary.stop()
        if self.admin is not None:
            await self.admin.cleanup()
            self.admin = None
        await self.tracer.stop()
        if self.plane is not None:
            await self.plane.stop()
        if self.ratelimit is not None:
            await self.ratelimit.stop()

    def ready(self) -> bool:
        """/readyz: the provider's first state is compiled and served (never the empty world
        before it), and the run mode's own conditions hold."""
        return self.plane is not None and self.state is not None and self.plane.ready() and self.plugs.ready()

    def experiments(self) -> ExperimentSource:
        """What the experiment page reads of this instance (rollouts: the runner while
        this instance runs them, else what the canary wiring knows of them)."""
        canary = self.plugs.canary

        def views() -> list[RouteView]:
            compiled = self.loop.compiled.get(GATEWAY)
            return [] if compiled is None else route_views(compiled, self.loop.objects)

        return ExperimentSource(mode=self.options.mode, views=views, rollouts=canary.rollouts, stats=canary.stats,
                                command=canary.command, leading=lambda: canary.runner is not None,
                                token=self.options.experiment_token)

    def workload_endpoints(self, endpoints: Endpoints) -> None:
        """The workload runtime's endpoints (every ModelInfer it runs): they replace the
        provider's for those ModelInfers."""
        self._workload_endpoints = MappingProxyType(dict(endpoints))
        self._feed_endpoints()

    # --- the flow ----------------------------------------------------------------------

    async def _on_state(self, state: ProviderState) -> None:
        plugs, previous = self.plugs, self.state
        self.state = state
        if previous is None:
            assert self.plane is not None
            self.loop.attach(self.plane.cache)
        if previous is None or state.objects != previous.objects:
            parts = state.split()
            plugs.canary.set_routes(self._rollout_inputs(parts))
            self.loop.set_objects(state.objects, state.refused)
            self.probe.set_objects(self._probed(parts))
        elif state.errors != previous.errors and state.refused != previous.refused:
            self.loop.set_objects(state.objects, state.refused)  # "not found" becomes "exists but is invalid"
        if dict(state.endpoints) != dict(previous.endpoints if previous is not None else {}):
            self._feed_endpoints()
        if plugs.workloads is not None:
            await plugs.workloads.apply(state)
        if previous is not None and state.errors != previous.errors:
            self.loop.publish_status()

    def _rollout_inputs(self, parts: tuple[tuple[Resource, ...], ...]) -> tuple[Resource, ...]:
        """What the canary runner reads of the objects (`canary_groups`): the routes with a
        canary and, when there are some, the ModelServers they may send to. Exact because a
        provider's state has one object per key (no duplicate to choose between)."""
        routes = self._canary_routes(parts)
        return routes + self._servers(parts) if routes else ()

    def _feed_endpoints(self) -> None:
        provided = self.state.endpoints if self.state is not None else {}
        self.probe.set_endpoints({**provided, **self._workload_endpoints})

    def _set_limits(self, compiled: Compiled) -> None:
        if self.ratelimit is not None and compiled.gateway is not None:
            self.ratelimit.service.set_limits(cluster_limits([compiled.gateway]))

    def _publish_status(self, compiled: Compiled,
                        statuses: Mapping[ObjectKey, ObjectStatus]) -> Awaitable[None] | None:
        return self.plugs.status.publish(compiled, statuses)


def _has_canary(obj: Resource) -> bool:
    return isinstance(obj, ModelRoute) and obj.spec.canary is not None and obj.spec.canary.enabled


class RunMode:
    """What a run mode (`Embedded`, `KubernetesMode`) shows of its App, by the names the
    CLI, tests and benchmarks use."""

    app: App

    @property
    def loop(self) -> ControlLoop:
        return self.app.loop

    @property
    def probe(self) -> EngineProbe:
        return self.app.probe

    @property
    def plane(self) -> ControlPlane | None:
        return self.app.plane

    @property
    def ratelimit(self) -> RunningService | None:
        return self.app.ratelimit

    @property
    def admin_port(self) -> int | None:
        return self.app.admin_port
