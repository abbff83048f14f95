"""`modelroute serve --provider kubernetes` as a user starts it: against the fake API (a
kubeconfig), the xDS, rate-limit and stats ports from the flags, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.kubernetes.fakeapi import FakeKubeApi
from tests.support import REPO, free_port

pytestmark = pytest.mark.slow


async def test_serve_kubernetes_binds_the_ports_it_is_given(fake_api: FakeKubeApi, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: \"{fake_api.url}\"}}}}]\n"
        "users: [{name: me, user: {token: t}}]\ncontexts: [{name: fake, context: {cluster: fake, user: me}}]\n")
    xds, ratelimit, stats, admin = free_port(), free_port(), free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelroute.cli", "serve", "--provider", "kubernetes", "--kubeconfig", str(kubeconfig),
        "--xds-address", f"127.0.0.1:{xds}", "--ratelimit-address", f"127.0.0.1:{ratelimit}",
        "--stats-address", f"127.0.0.1:{stats}", "--admin-address", f"127.0.0.1:{admin}",
        "--redis-url", "redis://127.0.0.1:1/0",
        "--system-namespace", "matrixinfer-system", "--identity", "cp-test", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "KUBECONFIG": os.devnull})
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert f"xDS (mTLS) on 127.0.0.1:{xds}" in line and f"rate-limit service on port {ratelimit}" in line, line
        assert f"on port {stats}" in line, line
        assert f"admin (/healthz /readyz /metrics /experiments) on port {admin}" in line, line
        for port in (xds, ratelimit, stats, admin):  # TCP: xDS, rate limits, statsd, admin
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


def test_a_bad_address_is_named_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from modelroute.cli import main

    assert main(["serve", "--provider", "kubernetes", "--webhook-address", "9443"]) == 2
    assert capsys.readouterr().out.strip() == "modelroute serve: --webhook-address: '9443' is not HOST:PORT"
