"""Kubernetes mode (`modelroute serve --provider kubernetes`): the same control loop as
embedded mode, fed by the cluster instead of a directory.

    API server ──► KubernetesControlPlane ──► ControlLoop ──► xDS server ──► Envoy gateways
       ▲              (informers; leader: workloads,            │
       └──────────── gateway Services, status) ◄── statuses ────┘

Every replica serves xDS; only the leader writes (Deployments, Services, status). Status
writes are network calls, so they run in their own task and always write the newest
statuses: a burst of compiles costs one round of writes, not one per compile.

Shared rate limits (`rateLimit.global`): every replica runs the rate-limit service
(gRPC, `ratelimit_address`, by default the xDS port + 1: the gateway bootstrap's
`modelroute_ratelimit` cluster) and hands it the limits of each gateway compile. The
counters live in the Redis named by `MODELROUTE_REDIS_URL` / `--redis-url`, which is what
makes the limit shared by every gateway and every replica. In a cluster there is no
private redis-server: without a configured Redis the service says so loudly at start
and answers by its failure mode (fail-open: everything allowed; fail-closed: limited
requests refused) whenever Redis cannot be reached.

Canary rollouts (`modelroute.canary_wiring.ClusterCanaryWiring`): every replica listens
for the gateways' stats on `stats_address` (UDP and TCP); the runner runs on the leader,
its state goes to each ModelRoute's `status.canary`/`status.rollout` with the status
writes, and every other replica applies the split that status shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from controller.background import cancel_and_wait, spawn
from controller.kubernetes.interface import KubeApi
from controller.kubernetes.leader import LeaderElector
from controller.kubernetes.runtime import KubernetesControlPlane
from controller.ratelimit_limits import cluster_limits
from controller.kubernetes.resources import MODEL_ROUTE
from controller.ratelimit_service import DEFAULT_REDIS_URL, RunningService, ServiceOptions, start_ratelimit_service
from modelroute.canary_wiring import ClusterCanaryWiring
from modelroute.control_loop import ControlLoop
from modelroute.targets import Placement
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import BackendEndpoint, Compiled, ObjectStatus
from xds_server import ControlPlane, start_control_plane
from xds_server.cache import metadata_node_group

log = logging.getLogger("modelroute.kubernetes")


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    identity: str  # this replica's name in leader election (the pod name)
    system_namespace: str  # where the Lease and the gateway Services live
    xds_host: str = "0.0.0.0"
    xds_port: int = 18000
    watch_namespace: str | None = None  # None: all namespaces
    listen_address: str = "0.0.0.0"  # where gateway listeners bind
    # rateLimit.global: HOST:PORT of the rate-limit service (None: the xDS host and port + 1,
    # what the bootstrap assumes; a free port when xds_port is 0) and its Redis.
    ratelimit_address: str | None = None
    ratelimit: ServiceOptions = field(default_factory=ServiceOptions.from_env)
    stats_address: str = "127.0.0.1:0"  # where gateway Envoys push stats (`serve`: 0.0.0.0:18002)
    lease_retry_s: float = 2.0  # how often a replica campaigns for / renews the leader Lease

    def ratelimit_bind(self) -> str:
        if self.ratelimit_address is not None:
            return self.ratelimit_address
        return f"{self.xds_host}:{self.xds_port + 1 if self.xds_port else 0}"


class KubernetesMode:
    def __init__(self, api: KubeApi, options: KubernetesOptions) -> None:
        self.options = options
        # Gateway pods are given NET_BIND_SERVICE (deploy/), so ports are used as written.
        self.loop = ControlLoop(placement=Placement(listen_address=options.listen_address),
                                on_status=self._on_status)
        self.cluster = KubernetesControlPlane(api, self, identity=options.identity,
                                              system_namespace=options.system_namespace,
                                              watch_namespace=options.watch_namespace,
                                              elector=LeaderElector(api, namespace=options.system_namespace,
                                                                    name="modelroute", identity=options.identity,
                                                                    retry_period=options.lease_retry_s),
                                              leader_tasks={"canary runner": lambda: self.canary.lead()})
        routes = self.cluster.provider.informers[MODEL_ROUTE.kind]
        stats_host, _, stats_port = options.stats_address.rpartition(":")
        self.canary = ClusterCanaryWiring(self.loop, lambda: list(routes.cache.values()),
                                          stats_host=stats_host or "0.0.0.0", stats_port=int(stats_port))
        self.plane: ControlPlane | None = None
        # One registry per instance: its /metrics shows this control plane only, and tests may
        # run several in one process.
        self.registry = CollectorRegistry()
        self.ratelimit: RunningService | None = None
        self._statuses: Mapping[ObjectKey, ObjectStatus] | None = None
        self._extras: Mapping[ObjectKey, Mapping[str, Any]] = {}
        self._statuses_changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        options = self.options.ratelimit
        if options.redis_url is None:
            log.error("NO REDIS CONFIGURED for shared rate limits (set MODELROUTE_REDIS_URL or --redis-url): "
                      "rateLimit.global is not enforced as a shared limit; trying %s and, while it cannot be "
                      "reached, answering %s", DEFAULT_REDIS_URL,
                      "fail-open (every request allowed)" if options.fail_open
                      else "fail-closed (every request to a limited server refused)")
        self.ratelimit = await start_ratelimit_service(self.options.ratelimit_bind(), options)
        # debounce 0: the control loop debounces world changes, once, before compiling.
        self.plane = await start_control_plane(xds_address=f"{self.options.xds_host}:{self.options.xds_port}",
                                               node_group=metadata_node_group, hooks=[self.loop.hooks],
                                               registry=self.registry, debounce=0.0)
        self.loop.attach(self.plane.cache)
        await self.canary.start()
        self._tasks = [spawn(self.loop.debouncer.run(), name="control-loop"),
                       spawn(self.cluster.run(), name="kubernetes"),
                       spawn(self._write_statuses(), name="status-writer")]
        log.info("kubernetes mode up: xds_port=%s ratelimit_port=%s stats_port=%s identity=%s",
                 self.plane.xds_port, self.ratelimit.port, self.canary.port, self.options.identity)

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.loop.close()
        await self.canary.stop()
        if self.plane is not None:
            await self.plane.stop()
        if self.ratelimit is not None:
            await self.ratelimit.stop()

    # The world sink of the cluster side: the canary sees the routes before the engine does,
    # so a rollout's weights are in place for the compile of its route.
    def set_objects(self, objects: Sequence[Resource]) -> None:
        self.canary.set_routes(objects)
        self.loop.set_objects(objects)

    def set_endpoints(self, endpoints: Mapping[ObjectKey, tuple[BackendEndpoint, ...]]) -> None:
        self.loop.set_endpoints(endpoints)

    def _on_status(self, compiled: Compiled, statuses: Mapping[ObjectKey, ObjectStatus]) -> None:
        if self.ratelimit is not None and compiled.gateway is not None:  # the unscoped compile
            self.ratelimit.service.set_limits(cluster_limits([compiled.gateway]))
        self._statuses, self._extras = self.canary.status(statuses)
        self._statuses_changed.set()

    async def _write_statuses(self) -> None:
        while True:
            await self._statuses_changed.wait()
            self._statuses_changed.clear()
            if self._statuses is not None:
                written = await self.cluster.write_statuses(self._statuses, self._extras)
                if written:
                    log.info("statuses written: count=%d", written)
