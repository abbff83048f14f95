"""Shared rate limits in Kubernetes mode: the control plane runs the rate-limit service
on its own port, with the Redis it is given, and hands it the limits of every gateway
compile; a real Envoy gateway gets 429 once the limit is spent."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from controller.local.envoy_process import EnvoyProcess
from controller.kubernetes.client import KubeClient
from controller.ratelimit.service import ServiceOptions
from modelroute.kubernetes_mode import KubernetesMode, KubernetesOptions
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import endpoint_slice, model, model_infer, server
from tests.ratelimit.conftest import RedisProcess
from tests.support import free_port
from xds_server.bootstrap import render_dict

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    redis = RedisProcess(free_port(), tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


async def _statuses(url: str, count: int) -> list[int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        out = []
        for _ in range(count):
            async with session.post(url, json={}) as response:
                out.append(response.status)
        return out


async def test_global_limit_is_enforced_through_the_shared_service(api: KubeClient, fake_api: FakeKubeApi,
                                                                   redis_server: RedisProcess,
                                                                   tmp_path: Path) -> None:
    gateway_port, replica_port = free_port(), free_port()
    limited = server("m", infer="m", port=gateway_port, path="/v1/models/m")
    limited["spec"]["rateLimit"] = {"enabled": True, "requestsPerSecond": 2, "global": True}
    slice_ = endpoint_slice("m-x", service="m", ready={"127.0.0.1": True}, port=replica_port)
    slice_["metadata"]["labels"]["workload.matrixinfer.ai/modelinfer"] = "m"
    for doc in (model("m"), model_infer("m", model_name="m"), limited, slice_):
        fake_api.seed(doc)
    replica = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.engines.mock_engine", "--port", str(replica_port), "--model", "m", "--infer", "m",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    mode = KubernetesMode(api, KubernetesOptions(
        identity="cp-0", system_namespace="matrixinfer-system", xds_host="127.0.0.1", xds_port=0,
        listen_address="127.0.0.1", ratelimit=ServiceOptions(redis_url=redis_server.url)))
    envoy: EnvoyProcess | None = None
    try:
        await mode.start()
        assert mode.plane is not None and mode.ratelimit is not None
        envoy = EnvoyProcess(render_dict("gateway", node_id="gw-0", cluster="gateway", xds_port=mode.plane.xds_port,
                                         admin_port=free_port(), ratelimit_port=mode.ratelimit.port),
                             tmp_path, name="gateway", log_level="warning")
        await envoy.start()
        url = f"http://127.0.0.1:{gateway_port}/v1/models/m/infer"
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # until the route and its endpoint are live and the limit is known
            try:
                statuses = await _statuses(url, 8)
            except aiohttp.ClientError:  # the listener is not there yet
                statuses = []
            if 429 in statuses or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.1)  # a fresh 1 s window
        statuses = await _statuses(url, 8)
        assert statuses.count(200) <= 3 and statuses.count(429) >= 5, statuses
        assert await mode.ratelimit.service.client.keys("modelroute:rl:*")  # the counters are in Redis
    finally:
        if envoy is not None:
            await envoy.stop()
        await mode.stop()
        replica.terminate()
        await replica.wait()


async def test_without_redis_the_service_says_so_and_serves_by_its_failure_mode(
        api: KubeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="modelroute.kubernetes")
    mode = KubernetesMode(api, KubernetesOptions(
        identity="cp-0", system_namespace="matrixinfer-system", xds_host="127.0.0.1", xds_port=0,
        ratelimit=ServiceOptions(redis_url=None, fail_open=False)))
    try:
        await mode.start()
        assert mode.ratelimit is not None and mode.ratelimit.port > 0
    finally:
        await mode.stop()
    (record,) = [r for r in caplog.records if "NO REDIS CONFIGURED" in r.getMessage()]
    assert "fail-closed" in record.getMessage() and "MODELROUTE_REDIS_URL" in record.getMessage()
