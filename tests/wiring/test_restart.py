"""A control-plane restart under running gateways (a crash, an upgrade, a new leader).

The new process compiles the same world to the same content versions, so the Envoys,
reconnecting with what they hold, are sent nothing. That silence is their verdict: every
object must be Programmed again (it stayed Unknown before `Hooks.on_resume`), promptly
after the Envoy is back, without any edit; Envoy serves while the control plane is
down and after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.local.envoy_process import EnvoyProcess
from controller.provider import ProviderState
from modelroute.app import App, AppOptions
from modelroute.canary_wiring import CanaryWiring
from modelroute.targets import Placement
from routing_engine.world import BackendEndpoint
from tests.kubernetes.helpers import mock_replica, served_by
from tests.support import config_counters, free_port
from tests.wiring.test_app import INFER, PROMISE, SERVER, MemoryProvider, MemoryStatus, objects
from xds_server.bootstrap import render_dict

pytestmark = pytest.mark.slow

async def _app(xds_port: int, state: ProviderState, status: MemoryStatus, run_dir: Path) -> App:
    app = App(AppOptions(mode="memory", placement=Placement(listen_address="127.0.0.1"),
                         xds_address=f"127.0.0.1:{xds_port}", ratelimit_address="127.0.0.1:0"))
    app.plug(provider=MemoryProvider(state), status=status, canary=CanaryWiring(run_dir, app.loop))
    await app.start(wait_compiled=10)
    return app


async def _within(predicate_seconds: float, check, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + predicate_seconds
    while not await check():
        assert loop.time() < deadline, f"{what}: not within {predicate_seconds}s"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_after_a_restart_the_gateway_is_sent_nothing_and_every_object_is_programmed_again(
        delta: bool, tmp_path: Path) -> None:
    gateway_port, replica_port, xds_port = free_port(), free_port(), free_port()
    replica = await mock_replica("one", replica_port)
    state = ProviderState(objects(gateway_port, limited=False), {INFER: (BackendEndpoint("127.0.0.1", replica_port, True),)})
    url = f"http://127.0.0.1:{gateway_port}/v1/models/m/infer"
    first, second = MemoryStatus(), MemoryStatus()
    app: App | None = await _app(xds_port, state, first, tmp_path / "first")
    envoy: EnvoyProcess | None = None
    try:
        assert app is not None and app.ratelimit is not None
        envoy = EnvoyProcess(render_dict("gateway", node_id="gw", cluster="gateway", xds_port=xds_port,
                                         admin_port=free_port(), ratelimit_port=app.ratelimit.port, delta=delta),
                             tmp_path, name="gateway", log_level="warning")
        await envoy.start()

        async def served() -> bool:
            return await served_by(url) == "default/one"

        async def programmed(status: MemoryStatus) -> bool:
            return status.programmed(SERVER)

        await _within(10, served, "served at Envoy's start")  # (Envoy's own start is not the promise)
        await _within(PROMISE, lambda: programmed(first), "Programmed after Envoy's ACKs")
        before = config_counters(await envoy.stats())

        await app.stop()
        app = None

        async def disconnected() -> bool:
            return (await envoy.stats()).get("control_plane.connected_state") == 0

        await _within(5, disconnected, "Envoy sees the control plane gone")
        assert await served()  # Envoy keeps serving what it holds
        app = await _app(xds_port, state, second, tmp_path / "second")

        async def connected() -> bool:
            return (await envoy.stats()).get("control_plane.connected_state") == 1

        await _within(20, connected, "Envoy reconnects")  # (its own retry back-off)
        await _within(PROMISE, lambda: programmed(second), "Programmed after the reconnect, with nothing sent")
        after = config_counters(await envoy.stats())
        assert after == before, {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
        assert await served()
        assert app.ready()
    finally:
        if envoy is not None:
            await envoy.stop()
        if app is not None:
            await app.stop()
        replica.terminate()
        await replica.wait()
