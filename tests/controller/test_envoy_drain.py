"""`modelroute drain` (the gateway's preStop hook) against the real Envoy: a request in
flight finishes, the hook returns only after it, new connections are refused once
Envoy's drain time is over; a request longer than the timeout does not hold the hook."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller.local.envoy_drain import active_requests
from controller.local.envoy_process import EnvoyProcess
from tests.support import REPO, free_port


def test_only_traffic_listeners_count() -> None:
    stats = {"stats": [{"name": "http.admin.downstream_rq_active", "value": 1},
                       {"name": "http.modelroute_readiness.downstream_rq_active", "value": 1},
                       {"name": "http.listener/8080.downstream_rq_active", "value": 2},
                       {"name": "http.listener/443.downstream_rq_active", "value": 1},
                       {"name": "http.listener/8080.downstream_rq_total", "value": 50}]}
    assert active_requests(json.dumps(stats)) == 3


def proxy_bootstrap(port: int, backend: int) -> dict[str, Any]:
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "listener/8080",
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
               "match": {"prefix": "/"}, "route": {"cluster": "model", "timeout": "60s"}}]}]}}
    return {"node": {"id": "drain-test", "cluster": "test"},
            "static_resources": {
                "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": [{"name": "model", "connect_timeout": "1s", "load_assignment": {
                    "cluster_name": "model", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": backend}}}}]}]}}]}}


async def slow_model(request: web.Request) -> web.Response:
    """A model that takes `?s=` seconds to answer, like a long generation."""
    await asyncio.sleep(float(request.query.get("s", "0")))
    return web.Response(text="generated")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[EnvoyProcess, int]]:
    backend = web.AppRunner(web.Application())
    backend.app.router.add_get("/{tail:.*}", slow_model)
    await backend.setup()
    backend_port, listen_port = free_port(), free_port()
    await web.TCPSite(backend, "127.0.0.1", backend_port).start()
    # As in deploy/: Envoy keeps accepting for its drain time, telling every connection to close at once.
    envoy = EnvoyProcess(proxy_bootstrap(listen_port, backend_port), tmp_path, name="gateway",
                         extra_args=["--drain-time-s", "1"])
    await envoy.start()
    try:
        yield envoy, listen_port
    finally:
        await envoy.stop()
        await backend.cleanup()


async def run_drain(envoy: EnvoyProcess, *args: str) -> tuple[int, str, float]:
    assert envoy.admin_address is not None
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelroute.cli", "drain", "--admin-address", "%s:%d" % envoy.admin_address, *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(), time.monotonic() - started


async def in_flight(envoy: EnvoyProcess, count: int) -> None:
    for _ in range(200):
        if (await envoy.stats(prefix="http.listener/8080.downstream_rq_active")).get(
                "http.listener/8080.downstream_rq_active") == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} request(s) never were in flight")


@pytest.mark.slow
async def test_drain_waits_for_the_request_in_flight_and_envoy_stops_accepting(
        gateway: tuple[EnvoyProcess, int]) -> None:
    envoy, port = gateway
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async def generate() -> tuple[int, str, float]:
            async with http.get(f"http://127.0.0.1:{port}/v1/generate?s=2.5") as resp:
                return resp.status, await resp.text(), time.monotonic()

        request = asyncio.create_task(generate())
        await in_flight(envoy, 1)
        code, out, seconds = await run_drain(envoy, "--min-drain-s", "0.2", "--timeout-s", "20")
        status, body, finished = await request
        assert (code, status, body) == (0, 200, "generated"), out
        assert "drained in" in out and "no request in flight" in out
        assert time.monotonic() - finished < seconds  # the hook returned after the answer, not before
        assert seconds >= 1.5  # it waited for the 2.5 s generation that was in flight
        assert envoy.running  # stopping Envoy is the kubelet's SIGTERM, after the hook
        with pytest.raises(aiohttp.ClientConnectionError):  # Envoy's drain time (1 s) is over: not listening
            async with http.get(f"http://127.0.0.1:{port}/v1/generate") as resp:
                await resp.read()


@pytest.mark.slow
async def test_drain_gives_up_at_its_timeout(gateway: tuple[EnvoyProcess, int]) -> None:
    envoy, port = gateway
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        request = asyncio.create_task(http.get(f"http://127.0.0.1:{port}/v1/generate?s=8"))
        try:
            await in_flight(envoy, 1)
            code, out, seconds = await run_drain(envoy, "--min-drain-s", "0", "--timeout-s", "1")
            assert code == 0 and "timeout after" in out and "1 request(s) in flight" in out, out
            assert 1.0 <= seconds < 5.0
        finally:
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)


@pytest.mark.slow
async def test_drain_without_an_envoy_fails_clearly() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelroute.cli", "drain", "--admin-address", f"127.0.0.1:{free_port()}",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and "envoy admin 127.0.0.1:" in out.decode() and "unreachable" in out.decode()
