"""HTTPS endpoint for the admission webhooks: `POST /validate`, `POST /mutate`,
`GET /healthz`. The handlers are the pure functions in `admission`; this module only
moves JSON and holds the TLS certificate.

The API server calls webhooks over TLS only, and checks the certificate against the
webhook configuration's `caBundle`. The certificate changes while serving (renewal,
rotation), so the server keeps one `ServingTls` whose context is reloaded in place: new
handshakes get the new certificate, open connections keep theirs. It comes from the
control plane's own Secret (`webhook_certs`, the default) or from files another issuer
writes, such as a mounted cert-manager Secret (`watch_files`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.kubernetes import admission
from controller.certs.pki import KeyPair, PkiError, matches
from controller.certs.tls import ServingTls
from routing_engine.api.extensions import ExtensionModels

log = logging.getLogger(__name__)

Review = Callable[[dict[str, Any]], dict[str, Any]]


async def watch_files(directory: Path, tls: ServingTls, *, every: float = 10.0) -> None:
    """Load `tls.crt`/`tls.key` from `directory` now and whenever they change (a mounted
    Secret is swapped atomically by the kubelet; a half-written pair is skipped)."""
    while True:
        try:
            pair = KeyPair((directory / "tls.crt").read_bytes(), (directory / "tls.key").read_bytes())
            if matches(pair):
                tls.load(pair)
            else:
                log.warning("webhook certificate and key do not match; keeping the last pair",
                            extra={"path": str(directory)})
        except (OSError, PkiError, ssl.SSLError) as err:
            log.warning("webhook certificate not loaded", extra={"path": str(directory), "error": str(err)})
        await asyncio.sleep(every)


def _handler(review: Review) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(body, dict) or body.get("kind") != "AdmissionReview":
            return web.json_response({"error": "expected an AdmissionReview"}, status=400)
        return web.json_response(review(body), dumps=json.dumps)

    return handle


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(extensions: ExtensionModels | None = None) -> web.Application:
    """`extensions`: the installed plugins' models, for ModelServers' `spec.extensions`."""
    app = web.Application(client_max_size=3 * 1024 * 1024)  # etcd's object size limit is ~1.5 MiB
    app.router.add_post("/validate", _handler(functools.partial(admission.validate, extensions=extensions)))
    app.router.add_post("/mutate", _handler(admission.mutate))
    app.router.add_get("/healthz", _healthz)
    return app


async def serve(*, host: str, port: int, tls: ServingTls | None, extensions: ExtensionModels | None = None
                ) -> tuple[web.AppRunner, int]:
    """Start serving (plain HTTP without `tls`, for tests); returns the runner (the caller
    calls `cleanup()` to stop) and the bound port (port 0 picks one)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(make_app(extensions), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=tls.context if tls is not None else None).start()
    return runner, int(sock.getsockname()[1])
