"""The xDS server against the real Envoy 1.40, over SotW ADS and delta ADS.

Traffic through Envoy is the oracle: initial config served, an update changes what is
served, a removal removes it, and a control-plane restart is invisible (no failed
request, no config update applied by Envoy).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support import config_counters, free_port
from tests.xds.envoy_support import (EnvoyProcess, Upstream, endpoints, eds_cluster, http_get, listener,
                                     route_config)
from xds_server import ControlPlane, Snapshot, check_consistency, start_control_plane

pytestmark = pytest.mark.slow


async def eventually(check, *, timeout: float = 15.0, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll a blocking `check()` (run in a thread) until it returns True."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        last = await asyncio.to_thread(check)
        if last is True:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def world(*, main_port: int, extra_port: int | None, upstream: Upstream, direct: dict[str, str]) -> Snapshot:
    resources = [eds_cluster("backend"), endpoints("backend", upstream.port),
                 listener("main", main_port, "main-routes"),
                 route_config("main-routes", cluster="backend", direct=direct)]
    if extra_port is not None:
        resources += [listener("extra", extra_port, "extra-routes"),
                      route_config("extra-routes", cluster="backend", direct={"/": "extra"})]
    snapshot = Snapshot.build(resources)
    assert check_consistency(snapshot) == []
    return snapshot


async def start_plane(port: int) -> ControlPlane:
    return await start_control_plane(xds_address=f"127.0.0.1:{port}", admin_host=None, registry=CollectorRegistry())


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    a, b = Upstream("upstream-a"), Upstream("upstream-b")
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_envoy_serves_updates_removals_and_survives_a_server_restart(
        delta: bool, upstreams: tuple[Upstream, Upstream], tmp_path: Path) -> None:
    a, b = upstreams
    xds_port, main_port, extra_port = free_port(), free_port(), free_port()
    main = f"http://127.0.0.1:{main_port}"
    plane = await start_plane(xds_port)
    envoy = None
    try:
        plane.cache.set_snapshot("gateway", world(main_port=main_port, extra_port=extra_port, upstream=a,
                                                  direct={"/direct": "hello-v1"}))
        envoy = await asyncio.to_thread(EnvoyProcess, tmp_path, xds_port=xds_port, delta=delta)

        # Initial config: listener → RDS → EDS cluster → the Python upstream.
        await eventually(lambda: http_get(main + "/") == (200, "upstream-a"), what="initial route to a")
        assert await asyncio.to_thread(http_get, main + "/direct") == (200, "hello-v1")
        assert await asyncio.to_thread(http_get, f"http://127.0.0.1:{extra_port}/") == (200, "extra")

        # Update: endpoints move to b, the direct response changes.
        plane.cache.set_snapshot("gateway", world(main_port=main_port, extra_port=extra_port, upstream=b,
                                                  direct={"/direct": "hello-v2"}))
        await eventually(lambda: http_get(main + "/direct") == (200, "hello-v2"), what="updated route")
        await eventually(lambda: http_get(main + "/") == (200, "upstream-b"), what="updated endpoints")

        # Removal: a route (by changing its RouteConfiguration) and a whole listener (LDS full set).
        final = world(main_port=main_port, extra_port=None, upstream=b, direct={})
        plane.cache.set_snapshot("gateway", final)
        await eventually(lambda: http_get(main + "/direct") == (200, "upstream-b"), what="direct route removed")
        await eventually(lambda: http_get(f"http://127.0.0.1:{extra_port}/")[0] == 0, what="listener removed")
        await eventually(lambda: envoy.stats().get("listener_manager.total_listeners_draining", 1) == 0,
                         what="drained")

        # Restart: the same content from a fresh process-equivalent (new cache, new server).
        before = await asyncio.to_thread(lambda: config_counters(envoy.stats()))
        failures: list[tuple[int, str]] = []
        served = [0]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                result = http_get(main + "/")
                served[0] += 1
                if result != (200, "upstream-b"):
                    failures.append(result)
                stop.wait(0.01)

        loader = threading.Thread(target=load, name="load", daemon=True)
        loader.start()
        await plane.stop(grace=None)
        await eventually(lambda: envoy.stats().get("control_plane.connected_state") == 0, what="envoy disconnect")
        plane = await start_plane(xds_port)
        plane.cache.set_snapshot("gateway", world(main_port=main_port, extra_port=None, upstream=b, direct={}))
        await eventually(lambda: envoy.stats().get("control_plane.connected_state") == 1, timeout=20,
                         what="envoy reconnect")
        await asyncio.sleep(1.0)  # give any (unwanted) resend time to be applied
        stop.set()
        await asyncio.to_thread(loader.join, 5)
        after = await asyncio.to_thread(lambda: config_counters(envoy.stats()))
        assert failures == [], failures[:5]
        assert served[0] > 20
        assert after == before, {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
        assert await asyncio.to_thread(http_get, main + "/") == (200, "upstream-b")

        # What the reconnect said it holds counts as held: the next change is served (a
        # route and the endpoints), within the second promised for a new model.
        plane.cache.set_snapshot("gateway", world(main_port=main_port, extra_port=None, upstream=a,
                                                  direct={"/direct": "hello-v3"}))
        await eventually(lambda: http_get(main + "/direct") == (200, "hello-v3"), timeout=1.0,
                         what="route changed after the restart")
        await eventually(lambda: http_get(main + "/") == (200, "upstream-a"), timeout=1.0,
                         what="endpoints changed after the restart")
    finally:
        if envoy is not None:
            await asyncio.to_thread(envoy.stop)
        await plane.stop(grace=None)
