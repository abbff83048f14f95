"""Sticky variant assignment (ext `canary.stickyHeader`): two Envoys — the gateway and a
sidecar, each with its own hash — put the same user in the same variant. Both push their
stats, and the control plane's per-variant counts are the sum over both."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from controller.local.envoy_process import EnvoyProcess
from modelroute.embedded import Embedded, EmbeddedOptions
from tests.canary.rollout_support import PATH
from tests.e2e.harness import dest, infer, route, server, write_manifests
from tests.support import free_port
from xds_server.bootstrap import render_dict

pytestmark = pytest.mark.slow


async def _served(session: aiohttp.ClientSession, url: str, user: str | None) -> str:
    headers = {"x-user-id": user} if user else {}
    async with session.post(url, json={}, headers=headers) as response:
        assert response.status == 200, await response.text()
        return response.headers["x-modelinfer"]


async def test_two_envoys_put_a_user_in_the_same_variant(tmp_path: Path) -> None:
    port = free_port()
    # No analysis: a 50/50 A/B experiment, so both variants get many users.
    write_manifests(tmp_path / "ab.yaml", [
        infer("v1"), infer("v2"),
        server("v1", port=port, path="/v1/models/v1"), server("v2", port=port, path="/v1/models/v2"),
        route("chat", path="/v1/chat", routes=[dest("v1"), dest("v2")],
              canary={"enabled": True, "trafficSplit": {"stable": 50, "canary": 50}, "stickyHeader": "X-User-Id"}),
    ])
    app = Embedded(EmbeddedOptions(directory=tmp_path, xds_port=0, listen_address="127.0.0.2",
                                   privileged_port_offset=0))
    sidecar: EnvoyProcess | None = None
    try:
        await app.start()
        await app.wait_ready(timeout=45)
        assert app.plane is not None
        bootstrap = render_dict("sidecar", node_id="app-1", cluster="sidecars", xds_port=app.plane.xds_port,
                                admin_port=free_port())
        bootstrap.update(app.canary.stats_sink())
        sidecar = EnvoyProcess(bootstrap, tmp_path / ".modelroute", name="sidecar", log_level="warning")
        await sidecar.start()
        gateway_url, sidecar_url = f"http://127.0.0.2:{port}{PATH}", f"http://127.0.0.1:{port}{PATH}"
        counted_from = time.time()
        sent = 0
        async with aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(100):  # the sidecar's listener comes up once it got its config
                try:
                    await _served(session, sidecar_url, "warm-up")
                    sent += 1
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            assignment: dict[str, str] = {}
            for n in range(40):
                user = f"user-{n}"
                seen = {await _served(session, url, user) for url in (gateway_url, sidecar_url) for _ in range(3)}
                assert len(seen) == 1, f"{user} was served by {seen}"
                assignment[user] = seen.pop()
                sent += 6
            assert set(assignment.values()) == {"default/v1", "default/v2"}
            # Without the header the split is per request, not per user.
            anonymous = {await _served(session, gateway_url, None) for _ in range(40)}
            assert anonymous == {"default/v1", "default/v2"}
            sent += 40
        # Every request, through either Envoy, is counted once (after a flush or two).
        clusters = ["modelserver/default/v1", "modelserver/default/v2"]
        for _ in range(40):
            windows = app.canary.stats.window(clusters, since=counted_from - 1)
            if sum(w.requests for w in windows.values()) >= sent:
                break
            await asyncio.sleep(0.1)
        assert sum(w.requests for w in windows.values()) == sent
        assert all(w.count("2xx") == w.requests and w.latencies_ms for w in windows.values())
    finally:
        if sidecar is not None:
            await sidecar.stop()
        await app.stop()
