"""Suite-wide pytest options and settings.

Tests fork child processes (Envoy, replicas) while gRPC threads run; gRPC's fork handlers
can abort such a child (SIGABRT) and are not needed for fork+exec, so they are off for the
whole session, set before any test module imports gRPC (as `modelroute` itself does).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*/ expected outputs from the current engine (and remove stale ones)",
    )


@pytest.fixture(autouse=True)
def _no_initial_fetch_timeout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Every Envoy a test starts through `EnvoyProcess` (directly, or in an embedded world;
    and tests/xds's own `envoy_support.EnvoyProcess`) is asked, before it is stopped, whether any xDS fetch timed out; the test fails if one
    did. Envoy's 15 s `initial_fetch_timeout` must never be what makes a test pass. Tests
    that provoke one on purpose are marked `expects_fetch_timeout`."""
    from controller.local.envoy_process import EnvoyProcess
    from tests.support import fetch_timeouts, timed_out_fetches

    found: list[tuple[str, dict[str, int]]] = []
    original = EnvoyProcess.stop

    async def stop(self: EnvoyProcess, *, grace: float = 5.0) -> int | None:
        if self.running:
            try:
                timed_out = await fetch_timeouts(self)
            except Exception:  # admin gone (a test killed it): nothing to ask
                timed_out = {}
            if timed_out:
                found.append((self.name, timed_out))
        return await original(self, grace=grace)

    monkeypatch.setattr(EnvoyProcess, "stop", stop)
    # tests/xds start their Envoys with a helper of their own (synchronous)
    from tests.xds import envoy_support

    original_sync = envoy_support.EnvoyProcess.stop

    def stop_sync(self: envoy_support.EnvoyProcess) -> None:
        if self.proc.poll() is None:
            try:
                timed_out = timed_out_fetches(self.stats())
            except Exception:  # admin gone: nothing to ask
                timed_out = {}
            if timed_out:
                found.append((f"xds test envoy {self.admin_port}", timed_out))
        original_sync(self)

    monkeypatch.setattr(envoy_support.EnvoyProcess, "stop", stop_sync)
    yield
    if found and request.node.get_closest_marker("expects_fetch_timeout") is None:
        pytest.fail(f"Envoy's initial_fetch_timeout fired (the control plane never answered): {found}")
