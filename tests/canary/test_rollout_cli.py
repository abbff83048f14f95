"""`modelroute rollout pause|resume|promote|abort|status` and `modelroute status`, run as
processes against a running embedded mode (real Envoy, real replicas)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.canary.rollout_support import ROUTE, canary_manifests, new_port, steady_load, wait_phase
from tests.e2e.harness import running
from tests.support import REPO

pytestmark = pytest.mark.slow


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "modelroute.cli", *args, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_pause_resume_promote_abort_from_the_cli(tmp_path: Path) -> None:
    port = new_port()
    canary_manifests(tmp_path, port=port, interval="2s", step=20)
    d = str(tmp_path)
    async with running(tmp_path) as app:
        runner = app.canary.runner
        async with steady_load(port) as load:
            code, out = await cli("rollout", "pause", "chat", "--dir", d)
            assert code == 0, out
            assert "paused by the user" in out
            paused = runner.state_of(ROUTE)
            assert paused is not None and paused.phase == "Paused"
            await asyncio.sleep(4.5)  # more than two intervals under load: no step
            assert runner.state_of(ROUTE) == paused

            code, out = await cli("rollout", "status", "default/chat", "--dir", d)
            assert code == 0 and "phase Paused" in out and f"canary {paused.canary_weight}%" in out, out
            assert "stable" in out and "canary" in out  # the A/B report's rows

            code, out = await cli("rollout", "resume", "chat", "--dir", d)
            assert code == 0 and "resumed" in out, out
            for _ in range(100):
                if runner.state_of(ROUTE).canary_weight > paused.canary_weight:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.05)
            assert runner.state_of(ROUTE).canary_weight > paused.canary_weight  # type: ignore[union-attr]

            code, out = await cli("rollout", "promote", "chat", "--dir", d)
            assert code == 0 and "promoted by the user" in out and "(0/100, Promoted)" in out, out
            await wait_phase(app, "Promoted", timeout=1)

            code, out = await cli("rollout", "abort", "chat", "--dir", d)
            assert code == 0 and "(100/0, RolledBack)" in out, out
            aborted_at = asyncio.get_running_loop().time()
            await asyncio.sleep(1.0)
            code, out = await cli("rollout", "resume", "chat", "--dir", d)
            assert code == 1 and "only a Paused rollout can be resumed" in out, out
        assert not load.errors
        assert {who for _, _, who in load.replies} == {"v1", "v2"}
        late = [who for t, _, who in load.replies if t > aborted_at + 0.5]
        assert late and set(late) == {"v1"}  # abort took effect in Envoy

        code, out = await cli("status", "--dir", d)
        assert code == 0 and "canary RolledBack: 100/0" in out and "aborted by the user" in out, out
        assert "VARIANT" in out and "default/v2" in out and "p=" in out  # the A/B report
        code, out = await cli("rollout", "promote", "nope", "--dir", d)
        assert code == 1 and "has no canary rollout" in out, out
    # Nobody is serving the directory any more: the command is withdrawn, not left queued.
    code, out = await cli("rollout", "pause", "chat", "--dir", d, "--wait", "0.5")
    assert code == 1 and "withdrawn" in out, out
    assert not [p for p in (tmp_path / ".modelroute" / "rollout").iterdir() if not p.name.startswith(".")]
