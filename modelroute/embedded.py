"""Embedded mode (`modelroute up DIR`): the whole product on one machine, no cluster.

    DIR ──► FileProvider ──► App (ControlLoop) ──► xDS server ──► Envoy (gateway) ──► replicas
                                 │      ▲                                                │
                     ModelInfers └─►ReplicaRuntime ── endpoints (EDS) ───────────────────┘

The application (`modelroute.app.App`, shared with Kubernetes mode) gets three parts
from here: the file provider (the manifests), the replica runtime as workload runtime
(each ModelInfer's replicas as local processes, the mock engine, whose endpoints it
reports), and the status file as status sink (`DIR/.modelroute/status.json`, what
`modelroute status` reads). Around it, this mode starts one gateway Envoy from the
bootstrap template. The same object serves the end-to-end tests, which drive it
in-process.

It survives its users:
- **one instance per directory and per port** (`controller.local.instance`): a lock in the run
  directory and a bind check of every port before anything starts, so a second `up`
  fails at once naming the process in the way, instead of sharing ports through
  SO_REUSEPORT and overwriting the first one's run files;
- **every child supervised and tied to us**: Envoy and redis-server are restarted with
  backoff when they exit (`controller.local.supervisor`), replicas by their runtime; all of
  them get SIGTERM from the kernel when this process dies, however it dies; while
  Envoy is down the status says its servers are not Ready;
- **drain before stop**: a replica that goes away is withdrawn from EDS and stopped only
  once every Envoy acknowledged that (`EndpointDrain`, bounded by `DRAIN_TIMEOUT_S`);
- **honest status**: besides the engine's ModelServer and ModelRoute statuses, the
  ModelInfers, Models and AutoscalingPolicies as Kubernetes mode reports them, every
  rejected file and object (republished as soon as the provider's errors change), and
  the state of each child process (`controller.local.embedded_status`).

Shared rate limits (`rateLimit.global`): the app's rate-limit service runs on its own
gRPC port (the Envoy bootstrap's `modelroute_ratelimit` cluster), with a private
`redis-server` unless `ratelimit.redis_url` names one.

Ports below 1024 in a manifest are moved up by `privileged_port_offset` when not running
as root (default 10000: 443 → 10443), and the printed URLs say so.

The admin HTTP server (`admin_address`, loopback by default) serves `/healthz`,
`/readyz`, `/metrics` (this control plane's series, `modelroute.metrics`, with the
per-variant and rollout series), `/debug/nodes` and the experiment page (`/experiments`,
read-only unless `experiment_token` is set; `modelroute.experiment_page`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controller.certs.tls import untrusted_material, watch_tls_files
from controller.local.embedded_status import with_gateway_down, with_rejections, workload_statuses
from controller.local.envoy_process import EnvoyProcess
from controller.local.file_provider import FileProvider
from controller.local.instance import InstanceLock, check_ports, split_address
from controller.local.replicas import ReplicaRuntime
from controller.local.status_view import StatusFile, status_path
from controller.local.status_view import run_dir as run_dir_of
from controller.local.supervisor import Supervisor
from controller.provider import ProviderState, errors_by_file
from controller.ratelimit.redis_server import redis_for
from controller.ratelimit.service import ServiceOptions
from kit.tasks import cancel_and_wait, spawn
from modelroute.app import App, AppOptions, RunMode
from modelroute.canary_wiring import CanaryWiring
from modelroute.endpoint_drain import EndpointDrain
from modelroute.route_views import ViewMemo, route_views
from modelroute.targets import GATEWAY, Placement, target_for_group
from routing_engine.api.resources import ModelServer, ObjectKey, Resource
from routing_engine.plugins import Plugin
from routing_engine.world import BackendEndpoint, Compiled, ObjectStatus
from xds_server.bootstrap import render_dict
from xds_server.tls import ServerTls

log = logging.getLogger("modelroute.embedded")

UNPRIVILEGED_OFFSET = 10_000
# How long a withdrawn replica waits for every Envoy's ACK before it is stopped anyway.
DRAIN_TIMEOUT_S = 5.0
ACCESS_LOG_FLUSH_MS = 1000


def default_port_offset() -> int:
    return 0 if os.geteuid() == 0 else UNPRIVILEGED_OFFSET


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class EmbeddedOptions:
    directory: Path
    xds_port: int = 18000  # 0: pick a free one
    # mTLS with remote Envoys (`serve --xds-tls files`): tls.crt, tls.key and ca.crt here,
    # reloaded on change; only without our own Envoy (it has no client certificate).
    xds_tls_dir: Path | None = None
    xds_host: str = "127.0.0.1"  # `serve` binds 0.0.0.0 so remote Envoys can connect
    listen_address: str = "127.0.0.1"  # where the gateway's listeners bind
    privileged_port_offset: int | None = None  # None: 0 as root, else 10000
    delta: bool = True  # Envoy subscribes with delta ADS (False: state of the world)
    envoy_log_level: str = "warning"
    start_envoy: bool = True
    # rateLimit.global: the rate-limit service's gRPC port (None: the xDS port + 1, what
    # the bootstrap templates assume; a free one with xds_port 0) and its Redis.
    ratelimit_port: int | None = None
    ratelimit: ServiceOptions = field(default_factory=ServiceOptions.from_env)
    # The translator's feature plugins (None: built-in plus the `modelroute.plugins` entry points).
    plugins: tuple[Plugin, ...] | None = None
    admin_address: str = "127.0.0.1:0"  # /healthz /readyz /metrics /debug/nodes /experiments (`up`: :19001)
    experiment_token: str | None = None  # None: the experiment page is read-only
    otlp_endpoint: str | None = None  # OpenTelemetry collector (OTLP/gRPC HOST:PORT); None: no tracing
    trace_sampling: float = 100.0  # percent of new requests the gateway traces

    @property
    def run_dir(self) -> Path:
        return run_dir_of(self.directory)

    @property
    def ratelimit_bind_port(self) -> int:
        if self.ratelimit_port is not None:
            return self.ratelimit_port
        return self.xds_port + 1 if self.xds_port else 0


class Embedded(RunMode):
    """`await start()` … `await stop()`, or `async with Embedded(options) as app`."""

    def __init__(self, options: EmbeddedOptions) -> None:
        self.options = options
        offset = options.privileged_port_offset
        self.placement = Placement(listen_address=options.listen_address,
                                   privileged_port_offset=default_port_offset() if offset is None else offset)
        self.lock = InstanceLock(options.run_dir, directory=options.directory)
        ratelimit, self.redis = redis_for(options.ratelimit, options.run_dir)
        # mTLS with remote Envoys: a throwaway certificate nobody trusts until the files are read.
        tls = ServerTls(untrusted_material()) if options.xds_tls_dir is not None else None
        self.app = App(AppOptions(
            mode="embedded", placement=self.placement, xds_address=f"{options.xds_host}:{options.xds_port}",
            ratelimit_address=f"{options.xds_host}:{options.ratelimit_bind_port}", ratelimit=ratelimit,
            admin_address=options.admin_address, experiment_token=options.experiment_token, plugins=options.plugins,
            otlp_endpoint=options.otlp_endpoint, trace_sampling=options.trace_sampling), tls=tls)
        self.app.metrics.leader.set(1)  # the only instance: it writes the status and judges rollouts
        self.canary = CanaryWiring(options.run_dir, self.loop)  # resumes persisted rollouts
        self.drain = EndpointDrain()
        self.replicas = ReplicaRuntime(on_endpoints=self.app.workload_endpoints, log_dir=options.run_dir / "replicas",
                                       drain=self._drain)
        self.provider = FileProvider(options.directory)
        self.status = StatusFileSink(StatusFile(status_path(options.run_dir)), self.app, self.canary, self.replicas,
                                     lambda: self.supervisors, lambda: self.gateway)
        self.app.plug(provider=self.provider, workloads=self.replicas, status=self.status, canary=self.canary,
                      hooks=[self.drain])
        self.gateway: Supervisor | None = None  # the gateway Envoy
        self._redis_supervisor: Supervisor | None = None
        self._tls_task: asyncio.Task[None] | None = None
        self._locked = False

    @property
    def envoy(self) -> EnvoyProcess | None:
        """The gateway Envoy running now (a new one after each restart)."""
        child = self.gateway.child if self.gateway is not None else None
        return child if isinstance(child, EnvoyProcess) else None

    @property
    def supervisors(self) -> list[Supervisor]:
        return [s for s in (self.gateway, self._redis_supervisor) if s is not None]

    async def __aenter__(self) -> Embedded:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, timeout: float = 30.0) -> None:
        """Raises `controller.local.instance.InstanceConflict` (before starting or writing
        anything) when another process serves the directory or holds a port."""
        self.lock.acquire()
        self._locked = True
        admin_host, admin_port = split_address(self.options.admin_address)
        check_ports([(self.options.xds_host, self.options.xds_port, "xDS"),
                     (self.options.xds_host, self.options.ratelimit_bind_port, "rate-limit service"),
                     (admin_host, admin_port, "admin and experiment page")])
        first = await self.provider.load()
        if self.options.start_envoy:
            check_ports(self._listener_ports(first.objects))
        if self.redis is not None:
            redis = self.redis
            self._redis_supervisor = Supervisor("redis", lambda: redis, on_change=self.loop.publish_status)
            await self._redis_supervisor.start()
        if self.app.tls is not None:
            if self.options.start_envoy:
                raise ValueError("xDS mTLS needs Envoys with client certificates: not with our own Envoy")
            assert self.options.xds_tls_dir is not None
            self._tls_task = spawn(watch_tls_files(self.options.xds_tls_dir, self.app.tls.update),
                                   name="xds certificate files")
        await self.app.start(wait_compiled=timeout)
        if self.options.start_envoy:
            self.gateway = Supervisor("gateway", self._make_gateway, on_change=self.loop.publish_status)
            await self.gateway.start()
        assert self.plane is not None
        log.info("embedded mode up: dir=%s xds_port=%s admin_port=%s", self.options.directory, self.plane.xds_port,
                 self.admin_port)

    def _listener_ports(self, objects: Sequence[Resource]) -> list[tuple[str, int, str]]:
        """(address, port, purpose) of every listener the gateway Envoy will bind."""
        target = target_for_group(GATEWAY, self.placement)
        ports = sorted({target.port(o.spec.service.port) for o in objects if isinstance(o, ModelServer)})
        return [(target.address, port, "a ModelServer listener") for port in ports]

    def _make_gateway(self) -> EnvoyProcess:
        """A gateway Envoy; a new admin port at every (re)start, so a restart never waits
        for the old one's port."""
        assert self.plane is not None and self.ratelimit is not None
        bootstrap = render_dict("gateway", node_id="modelroute-gateway", cluster="gateway",
                                xds_port=self.plane.xds_port, admin_port=_free_port(), delta=self.options.delta,
                                ratelimit_port=self.ratelimit.port)
        bootstrap.update(self.canary.stats_sink())
        # The JSON access log (its stdout: `gateway.stdout`) is flushed every second, not every 10 s.
        return EnvoyProcess(bootstrap, self.options.run_dir, name="gateway", log_level=self.options.envoy_log_level,
                            extra_args=["--file-flush-interval-msec", str(ACCESS_LOG_FLUSH_MS)])

    async def _drain(self, endpoints: Sequence[BackendEndpoint]) -> bool:
        """True when every Envoy dropped `endpoints`, False when the timeout ran out."""
        return await self.drain.withdrawn(endpoints, timeout=DRAIN_TIMEOUT_S)

    async def stop(self) -> None:
        """Stop every child we started (Envoy, replicas, redis-server), then the control
        plane; release the directory."""
        if self.gateway is not None:
            await self.gateway.stop()
        await self.app.stop()
        await cancel_and_wait(self._tls_task)
        if self._redis_supervisor is not None:
            await self._redis_supervisor.stop()
        if self._locked:
            self.lock.release()
            self._locked = False

    async def wait_ready(self, *, timeout: float) -> None:
        """Wait until every replica is ready, their endpoints are compiled, and the gateway
        Envoy has accepted every resource of that compile at its current version (its
        endpoints by content: the same ClusterLoadAssignment names are ACKed long before
        the replicas are in them), and the status view says so. Raises
        asyncio.TimeoutError."""
        async def _wait() -> None:
            while any(c.ready < c.desired for c in self.replicas.status().values()):
                await asyncio.sleep(0.05)
            await self.loop.wait_synced(timeout=timeout)
            while any(c.status != "True" for c in self.loop.tracker.conditions().values()):
                await asyncio.sleep(0.02)
            await self.loop.status_settled(timeout=timeout)
        await asyncio.wait_for(_wait(), timeout)

    async def serve_until_signalled(self, on_started: Callable[[], Awaitable[None] | None]) -> None:
        """Start, call `on_started`, serve until SIGINT/SIGTERM, then stop every child."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            started = on_started()
            if started is not None:
                await started
            await stop.wait()
        finally:
            await self.stop()


class StatusFileSink:
    """Embedded mode's status sink: `DIR/.modelroute/status.json` (`StatusFile`), with
    what a cluster would report besides the engine's statuses (ModelInfers, Models and
    policies from the replicas, the provider's rejected objects and files) and the state
    of the child processes."""

    def __init__(self, file: StatusFile, app: App, canary: CanaryWiring, replicas: ReplicaRuntime,
                 children: Callable[[], Sequence[Supervisor]], gateway: Callable[[], Supervisor | None]) -> None:
        self.file = file
        self._app = app
        self._canary = canary
        self._replicas = replicas
        self._children = children
        self._gateway = gateway
        self._views: ViewMemo = {}  # route views kept between publications (unchanged routes: same objects)

    async def publish(self, compiled: Compiled, statuses: Mapping[ObjectKey, ObjectStatus]) -> None:
        """The pure, heavy parts (route views, statuses, the JSON document) run in a thread
        so that the event loop keeps serving xDS; what reads live state (canary runner,
        replicas, provider state, children) is read on the loop."""
        objects = self._app.loop.objects
        views = await asyncio.to_thread(route_views, compiled, objects, self._views)
        statuses, routes = self._canary.status(statuses, views)
        state = self._app.state or ProviderState()
        replicas = self._replicas.status()
        processes = [s.state() for s in self._children()]
        supervisor = self._gateway()
        gateway = supervisor.state() if supervisor is not None else None

        def document() -> None:
            workloads, extras = workload_statuses(objects, replicas)
            merged = with_rejections({**statuses, **workloads}, state.errors)
            if gateway is not None and not gateway.running:
                merged = with_gateway_down(merged, f"the gateway Envoy is not running ({gateway.state}: "
                                                   f"{gateway.message or 'starting'})")
            self.file.write(statuses=merged, routes=routes, replicas=replicas, errors=errors_by_file(state.errors),
                            extras=extras, processes=processes)

        await asyncio.to_thread(document)
