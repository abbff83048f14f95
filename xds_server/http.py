"""Admin HTTP: /healthz (process alive), /readyz (serving with a snapshot), /metrics,
/debug/nodes. Small on purpose; it binds where the caller says (default loopback)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from xds_server.debug import DebugState


def admin_app(*, ready: Callable[[], bool], debug: DebugState,
              registry: CollectorRegistry | None = None) -> web.Application:
    reg = registry if registry is not None else REGISTRY

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: no snapshot served yet\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(reg), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def nodes(_: web.Request) -> web.Response:
        return web.json_response(debug.nodes())

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/nodes", nodes)
    return app


async def start_admin(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the admin server; returns the runner (`await runner.cleanup()` to stop) and
    the bound port. The socket is bound here so that port 0 reports the real port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])
