"""Kubernetes mode (`modelroute serve --provider kubernetes`): the same control loop as
embedded mode, fed by the cluster instead of a directory.

    API server ──► KubernetesControlPlane ──► ControlLoop ──► xDS server ──► Envoy gateways
       ▲              (informers; leader: workloads,            │
       └──────────── gateway Services, status) ◄── statuses ────┘

Every replica serves xDS; only the leader writes (Deployments, Services, status). Status
writes are network calls, so they run in their own task and always write the newest
statuses: a burst of compiles costs one round of writes, not one per compile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from controller.background import cancel_and_wait, spawn
from controller.kubernetes.interface import KubeApi
from controller.kubernetes.runtime import KubernetesControlPlane
from modelroute.control_loop import ControlLoop
from modelroute.targets import Placement
from routing_engine.api.resources import ObjectKey
from routing_engine.world import Compiled, ObjectStatus
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


class KubernetesMode:
    def __init__(self, api: KubeApi, options: KubernetesOptions) -> None:
        self.options = options
        # Gateway pods are given NET_BIND_SERVICE (deploy/), so ports are used as written.
        self.loop = ControlLoop(placement=Placement(listen_address=options.listen_address),
                                on_status=self._on_status)
        self.cluster = KubernetesControlPlane(api, self.loop, identity=options.identity,
                                              system_namespace=options.system_namespace,
                                              watch_namespace=options.watch_namespace)
        self.plane: ControlPlane | None = None
        # One registry per instance: its /metrics shows this control plane only, and tests may
        # run several in one process.
        self.registry = CollectorRegistry()
        self._statuses: Mapping[ObjectKey, ObjectStatus] | None = None
        self._statuses_changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.plane = await start_control_plane(xds_address=f"{self.options.xds_host}:{self.options.xds_port}",
                                               node_group=metadata_node_group, hooks=[self.loop.hooks],
                                               registry=self.registry)
        self.loop.attach(self.plane.cache)
        self._tasks = [spawn(self.loop.debouncer.run(), name="control-loop"),
                       spawn(self.cluster.run(), name="kubernetes"),
                       spawn(self._write_statuses(), name="status-writer")]
        log.info("kubernetes mode up: xds_port=%s identity=%s", self.plane.xds_port, self.options.identity)

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        if self.plane is not None:
            await self.plane.stop()

    def _on_status(self, compiled: Compiled, statuses: Mapping[ObjectKey, ObjectStatus]) -> None:
        self._statuses = statuses
        self._statuses_changed.set()

    async def _write_statuses(self) -> None:
        while True:
            await self._statuses_changed.wait()
            self._statuses_changed.clear()
            if self._statuses is not None:
                written = await self.cluster.write_statuses(self._statuses)
                if written:
                    log.info("statuses written: count=%d", written)
