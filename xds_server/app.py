"""One call to start the whole xDS control plane: cache, protocol, gRPC, admin HTTP.

This is what the wiring code uses; the pieces stay usable on their own (tests build
them individually).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry

from xds_server.cache import NodeGroup, SnapshotCache, default_node_group
from xds_server.debug import DebugState
from xds_server.grpc_app import start_grpc
from xds_server.hooks import AckCallback, Hooks, HookSet, LogHooks, NackCallback, StatusHooks
from xds_server.http import admin_app, start_admin
from xds_server.metrics import XdsMetrics
from xds_server.server import Authorize, Limits, XdsServer


@dataclass
class ControlPlane:
    cache: SnapshotCache
    server: XdsServer
    grpc_server: grpc.aio.Server
    xds_port: int
    debug: DebugState
    metrics: XdsMetrics
    admin: web.AppRunner | None = None
    admin_port: int | None = None

    def ready(self) -> bool:
        """Ready once at least one node group has a snapshot to serve."""
        return bool(self.cache.groups())

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.grpc_server.stop(grace)
        if self.admin is not None:
            await self.admin.cleanup()


async def start_control_plane(*, xds_address: str = "127.0.0.1:18000", admin_host: str | None = "127.0.0.1",
                              admin_port: int = 0, node_group: NodeGroup = default_node_group,
                              on_ack: AckCallback | None = None, on_nack: NackCallback | None = None,
                              hooks: Sequence[Hooks] = (), registry: CollectorRegistry | None = None,
                              credentials: grpc.ServerCredentials | None = None, authorize: Authorize | None = None,
                              limits: Limits = Limits()) -> ControlPlane:
    """`admin_host=None` skips the admin HTTP server. Ports 0 pick free ports.
    `authorize`: which node group a peer gets (e.g. `identity.authorized_group`; default:
    `node_group`, no identity checked); `credentials`: mTLS (`xds_server.tls`)."""
    metrics = XdsMetrics(registry)
    debug = DebugState()
    all_hooks = HookSet([metrics, debug, LogHooks(), StatusHooks(on_ack, on_nack), *hooks])
    cache = SnapshotCache(node_group, hooks=all_hooks)
    server = XdsServer(cache, [all_hooks], authorize=authorize, limits=limits)
    grpc_server, port = await start_grpc(server, xds_address, credentials)
    plane = ControlPlane(cache, server, grpc_server, port, debug, metrics)
    if admin_host is not None:
        plane.admin, plane.admin_port = await start_admin(
            admin_app(ready=plane.ready, debug=debug, registry=registry), admin_host, admin_port)
    return plane
