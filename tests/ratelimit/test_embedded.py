"""Embedded mode starts its own redis-server for the shared limit and stops it by PID."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import aiohttp
import pytest

from modelroute.embedded import Embedded, EmbeddedOptions
from tests.support import free_port

pytestmark = pytest.mark.slow


async def test_up_runs_a_private_redis_and_enforces_the_global_limit(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "m.yaml").write_text(textwrap.dedent(f"""
        apiVersion: workload.matrixinfer.ai/v1alpha1
        kind: ModelInfer
        metadata: {{name: m}}
        spec: {{modelRef: {{name: m}}, replicas: 1}}
        ---
        apiVersion: networking.matrixinfer.ai/v1alpha1
        kind: ModelServer
        metadata: {{name: m}}
        spec:
          modelInferRef: {{name: m}}
          service: {{port: {port}}}
          routing: {{path: /v1/models/m}}
          rateLimit: {{enabled: true, requestsPerSecond: 2, global: true}}
        """))
    app = Embedded(EmbeddedOptions(directory=tmp_path, xds_port=0, privileged_port_offset=0))
    pid = None
    try:
        await app.start()
        await app.wait_ready(timeout=30)
        assert app.redis is not None and app.redis.proc is not None
        pid = app.redis.proc.pid
        statuses = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            for _ in range(8):
                async with session.post(f"http://127.0.0.1:{port}/v1/models/m/infer", json={}) as response:
                    statuses.append(response.status)
        assert statuses.count(200) <= 4 and 429 in statuses, statuses
        assert await app.ratelimit.service.client.keys("modelroute:rl:*") if app.ratelimit else False
    finally:
        await app.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
