"""HTTPS endpoint for the admission webhooks: `POST /validate`, `POST /mutate`,
`GET /healthz`. The API server only calls webhooks over TLS; the certificate is mounted
from a Secret (deploy/ uses cert-manager's CA injector; any CA works if its bundle is put
in the webhook configuration's `caBundle`). The handlers are the pure functions in
`admission`; this module only moves JSON."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controller.kubernetes import admission

Review = Callable[[dict[str, Any]], dict[str, Any]]


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


def make_app() -> web.Application:
    app = web.Application(client_max_size=3 * 1024 * 1024)  # etcd's object size limit is ~1.5 MiB
    app.router.add_post("/validate", _handler(admission.validate))
    app.router.add_post("/mutate", _handler(admission.mutate))
    app.router.add_get("/healthz", _healthz)
    return app


async def serve(*, host: str, port: int, cert_file: str | None, key_file: str | None) -> web.AppRunner:
    """Start serving; the caller keeps the runner and calls `cleanup()` to stop."""
    runner = web.AppRunner(make_app())
    await runner.setup()
    context = None
    if cert_file and key_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner
