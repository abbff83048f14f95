"""Embedded mode (`modelroute up DIR`): the whole product on one machine, no cluster.

    DIR ──► FileProvider ──► ControlLoop ──► xDS server ──► Envoy (gateway) ──► replicas
                 │                ▲                                               │
                 └─ ModelInfers ─►ReplicaRuntime ── endpoints (EDS) ──────────────┘

The file provider publishes the manifests; the replica runtime runs each ModelInfer's
replicas as local processes (the mock engine) and reports their endpoints; the control
loop compiles and pushes; one Envoy is started from the gateway bootstrap template.
Status goes to `DIR/.modelroute/status.json` (what `modelroute status` reads). The same
object serves the end-to-end tests, which drive it in-process.

Shared rate limits (`rateLimit.global`): the rate-limit service runs here too, on its own
gRPC port (the Envoy bootstrap's `modelroute_ratelimit` cluster), with a private
`redis-server` unless `ratelimit.redis_url` names one; every gateway compile hands it
the limits per destination cluster.

Ports below 1024 in a manifest are moved up by `privileged_port_offset` when not running
as root (default 10000: 443 → 10443), and the printed URLs say so.
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

from prometheus_client import CollectorRegistry

from controller.background import cancel_and_wait, spawn
from controller.ratelimit_limits import cluster_limits
from controller.ratelimit_redis import LocalRedis, redis_for
from controller.ratelimit_service import RunningService, ServiceOptions, start_ratelimit_service
from controller.envoy_process import EnvoyProcess
from controller.file_provider import FileProvider
from controller.replicas import ReplicaRuntime
from controller.run_lock import RunLock
from controller.status_view import StatusWriter, status_path
from modelroute.canary_wiring import CanaryWiring
from modelroute.control_loop import ControlLoop
from modelroute.route_views import route_views
from modelroute.targets import Placement
from routing_engine.api.resources import ModelInfer, ObjectKey, Resource
from routing_engine.world import Compiled, ObjectStatus
from xds_server import ControlPlane, start_control_plane
from xds_server.cache import metadata_node_group
from xds_server.bootstrap import render_dict

log = logging.getLogger("modelroute.embedded")

UNPRIVILEGED_OFFSET = 10_000


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
    xds_host: str = "127.0.0.1"  # `serve` binds 0.0.0.0 so remote Envoys can connect
    listen_address: str = "127.0.0.1"  # where the gateway's listeners bind
    privileged_port_offset: int | None = None  # None: 0 as root, else 10000
    delta: bool = False  # Envoy uses delta ADS instead of state-of-the-world
    envoy_log_level: str = "warning"
    start_envoy: bool = True
    # rateLimit.global: the rate-limit service's gRPC port (None: the xDS port + 1, what
    # the bootstrap templates assume; a free one with xds_port 0) and its Redis.
    ratelimit_port: int | None = None
    ratelimit: ServiceOptions = field(default_factory=ServiceOptions.from_env)

    @property
    def run_dir(self) -> Path:
        return self.directory / ".modelroute"


class Embedded:
    """`await start()` … `await stop()`, or `async with Embedded(options) as app`."""

    def __init__(self, options: EmbeddedOptions) -> None:
        self.options = options
        offset = options.privileged_port_offset
        self.placement = Placement(listen_address=options.listen_address,
                                   privileged_port_offset=default_port_offset() if offset is None else offset)
        self.status_writer = StatusWriter(status_path(options.run_dir))
        self.loop = ControlLoop(placement=self.placement, on_status=self._write_status)
        self.canary = CanaryWiring(options.run_dir, self.loop)  # resumes persisted rollouts
        self.replicas = ReplicaRuntime(on_endpoints=self.loop.set_endpoints, log_dir=options.run_dir / "replicas")
        self.provider = FileProvider(options.directory, self._on_objects)
        self.plane: ControlPlane | None = None
        # One registry per instance: its /metrics shows this control plane only, and tests may
        # run several in one process.
        self.registry = CollectorRegistry()
        self.envoy: EnvoyProcess | None = None
        self.run_lock = RunLock(options.run_dir)  # tells `modelroute status` we are live
        self.ratelimit: RunningService | None = None
        self.redis: LocalRedis | None = None
        self._debounce_task: asyncio.Task | None = None

    async def __aenter__(self) -> Embedded:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, timeout: float = 30.0) -> None:
        """Raises `controller.run_lock.AlreadyServed` if another instance serves the directory."""
        self.options.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_lock.acquire()
        ratelimit_options, self.redis = await redis_for(self.options.ratelimit, self.options.run_dir)
        rls_port = self.options.ratelimit_port
        if rls_port is None:
            rls_port = self.options.xds_port + 1 if self.options.xds_port else 0
        self.ratelimit = await start_ratelimit_service(f"{self.options.xds_host}:{rls_port}", ratelimit_options)
        self.plane = await start_control_plane(xds_address=f"{self.options.xds_host}:{self.options.xds_port}",
                                               node_group=metadata_node_group, hooks=[self.loop.hooks],
                                               registry=self.registry)
        self.loop.attach(self.plane.cache)
        await self.canary.start()
        self._debounce_task = spawn(self.loop.debouncer.run(), name="control-loop")
        before = self.loop.generation
        await self.provider.start()
        await self.loop.wait_pushed(before, timeout=timeout)
        if self.options.start_envoy:
            admin_port = _free_port()
            bootstrap = render_dict("gateway", node_id="modelroute-gateway", cluster="gateway",
                                    xds_port=self.plane.xds_port, admin_port=admin_port, delta=self.options.delta,
                                    ratelimit_port=self.ratelimit.port)
            bootstrap.update(self.canary.stats_sink())
            self.envoy = EnvoyProcess(bootstrap, self.options.run_dir, name="gateway",
                                      log_level=self.options.envoy_log_level)
            await self.envoy.start(timeout=timeout)
        log.info("embedded mode up: dir=%s xds_port=%s", self.options.directory, self.plane.xds_port)

    async def stop(self) -> None:
        """Stop every child we started (Envoy, replicas), then the control plane."""
        if self.envoy is not None:
            await self.envoy.stop()
        await self.provider.close()
        await self.replicas.close()
        await cancel_and_wait(self._debounce_task)
        await self.loop.close()
        await self.canary.stop()
        if self.plane is not None:
            await self.plane.stop()
        if self.ratelimit is not None:
            await self.ratelimit.stop()
        if self.redis is not None:
            await self.redis.stop()
        self.run_lock.release()

    async def wait_ready(self, *, timeout: float) -> None:
        """Wait until every replica is ready, their endpoints are compiled, and the gateway
        Envoy has ACKed everything of that compile, and the status view says so. Raises
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

    async def _on_objects(self, objects: Sequence[Resource]) -> None:
        self.canary.set_routes(objects)
        self.loop.set_objects(objects)
        await self.replicas.reconcile(o for o in objects if isinstance(o, ModelInfer))

    async def _write_status(self, compiled: Compiled, statuses: Mapping[ObjectKey, ObjectStatus]) -> None:
        """The pure, heavy parts (route views, the JSON document) run in a thread so that the
        event loop keeps serving xDS; what reads live state (canary runner, replicas, file
        errors) stays on the loop."""
        if self.ratelimit is not None and compiled.gateway is not None:  # the unscoped compile
            self.ratelimit.service.set_limits(cluster_limits([compiled.gateway]))
        views = await asyncio.to_thread(route_views, compiled, self.loop.objects)
        statuses, routes = self.canary.status(statuses, views)
        await asyncio.to_thread(self.status_writer.write, statuses=statuses, routes=routes,
                                replicas=self.replicas.status(), errors=self.provider.errors)
