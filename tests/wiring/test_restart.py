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
from xds_server.held import Held

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
async def test_after_a_restart_the_gateways_are_sent_nothing_and_every_object_is_programmed_again(
        delta: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gateway Envoys: with delta, the second's claims (`initial_resource_versions`)
    are compared whole with the snapshot's (`Snapshot.claim`), never read into a dict:
    a real Envoy claims exactly what it was sent, or the comparison would not pay."""
    claims, reads = [], []
    claimed, read_claim = Held.claimed, Held._read_claim

    def claim(request):  # type: ignore[no-untyped-def]
        claims.append(request.type_url)
        return claimed(request)

    def read(held: Held) -> None:
        if held.unread:
            reads.append(len(held))
        read_claim(held)

    monkeypatch.setattr(Held, "claimed", staticmethod(claim))
    monkeypatch.setattr(Held, "_read_claim", read)
    gateway_port, replica_port, xds_port = free_port(), free_port(), free_port()
    replica = await mock_replica("one", replica_port)
    state = ProviderState(objects(gateway_port, limited=False), {INFER: (BackendEndpoint("127.0.0.1", replica_port, True),)})
    url = f"http://127.0.0.1:{gateway_port}/v1/models/m/infer"
    first, second = MemoryStatus(), MemoryStatus()
    app: App | None = await _app(xds_port, state, first, tmp_path / "first")
    envoys: list[EnvoyProcess] = []
    try:
        assert app is not None and app.ratelimit is not None
        for node in ("gw-1", "gw-2"):
            envoy = EnvoyProcess(render_dict("gateway", node_id=node, cluster="gateway", xds_port=xds_port,
                                             admin_port=free_port(), ratelimit_port=app.ratelimit.port, delta=delta),
                                 tmp_path / node, name=node, log_level="warning")
            envoys.append(envoy)
            await envoy.start()

        async def served() -> bool:
            return await served_by(url) == "default/one"

        async def programmed(status: MemoryStatus) -> bool:
            return status.programmed(SERVER)

        async def connected(wanted: int) -> bool:
            return all([(await e.stats()).get("control_plane.connected_state") == wanted for e in envoys])

        await _within(10, served, "served at Envoy's start")  # (Envoy's own start is not the promise)
        await _within(PROMISE, lambda: programmed(first), "Programmed after Envoy's ACKs")
        before = [config_counters(await e.stats()) for e in envoys]

        await app.stop()
        app = None
        await _within(5, lambda: connected(0), "the Envoys see the control plane gone")
        assert await served()  # Envoy keeps serving what it holds
        assert claims == []
        app = await _app(xds_port, state, second, tmp_path / "second")
        await _within(20, lambda: connected(1), "the Envoys reconnect")  # (their own retry back-off)
        await _within(PROMISE, lambda: programmed(second), "Programmed after the reconnect, with nothing sent")
        after = [config_counters(await e.stats()) for e in envoys]
        assert after == before
        assert await served()
        assert app.ready()
        if delta:  # one Envoy's claims read (nothing to compare with yet), the other's compared whole
            assert len(claims) >= 8 and sorted(claims) == sorted(2 * sorted(set(claims))), claims
            assert len(reads) == len(claims) // 2, (reads, claims)
    finally:
        for envoy in envoys:
            await envoy.stop()
        if app is not None:
            await app.stop()
        replica.terminate()
        await replica.wait()
