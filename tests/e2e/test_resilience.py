"""Issue #5, "Done when": timeout → 504; safe retries (503 is retried on another replica,
500 — the model may have done the work — is not); rate limit → 429 with rate-limit
headers once the burst is spent."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from modelroute.embedded import Embedded
from tests.e2e.harness import Client, infer, infer_key, running, server, served_by, write_manifests
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

@dataclass(frozen=True)
class Setup:
    app: Embedded
    client: Client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    directory = tmp_path_factory.mktemp("resilience")
    port = free_port()
    write_manifests(directory / "all.yaml", [
        infer("slow"), infer("retry", 2), infer("failing", 2), infer("limited"),
        server("slow", port=port, path="/v1/models/slow", routing={"timeout": "1s", "retries": 0}),
        server("retry", port=port, path="/v1/models/retry", routing={"retries": 2}),
        # its own server: the injected failures above must not get its replicas ejected
        server("failing", port=port, path="/v1/models/failing", routing={"retries": 2}),
        server("limited", port=port, path="/v1/models/limited",
               rateLimit={"enabled": True, "requestsPerSecond": 1, "burstSize": 5}),
    ])
    async with running(directory) as app, Client(port) as client:
        yield Setup(app, client)


async def retries_counted(app: Embedded, cluster: str = "modelserver/default/retry") -> int:
    assert app.envoy is not None
    stats = await app.envoy.stats()
    return stats.get(f"cluster.{cluster}.upstream_rq_retry", 0)


async def test_a_slow_model_past_routing_timeout_gets_504(setup: Setup) -> None:
    fast = await setup.client.post("/v1/models/slow/infer", headers={"x-mock-delay-ms": "100"})
    assert (fast.status, fast.served_by) == (200, "slow")
    slow = await setup.client.post("/v1/models/slow/infer", headers={"x-mock-delay-ms": "4000"})
    assert slow.status == 504
    assert 0.9 <= slow.elapsed < 3.0, f"answered after {slow.elapsed:.2f}s, routing.timeout is 1s"


async def test_503_is_retried_up_to_routing_retries(setup: Setup) -> None:
    before = await retries_counted(setup.app)
    reply = await setup.client.post("/v1/models/retry/infer", headers={"x-mock-status": "503"})
    assert reply.status == 503  # every attempt failed: 1 try + 2 retries
    await asyncio.sleep(0.2)
    assert await retries_counted(setup.app) - before == 2


async def test_500_is_not_retried(setup: Setup) -> None:
    before = await retries_counted(setup.app)
    replies = await served_by(setup.client, "/v1/models/retry/infer", n=3, concurrency=1,
                              headers={"x-mock-status": "500"})
    assert [r.status for r in replies] == [500] * 3
    await asyncio.sleep(0.2)
    assert await retries_counted(setup.app) - before == 0


async def test_a_replica_answering_503_is_retried_on_the_other_replica(setup: Setup) -> None:
    ports = sorted(ep.port for ep in setup.app.replicas.endpoints()[infer_key("failing")])
    assert len(ports) == 2
    async with Client(ports[0]) as direct:
        broken = await direct.post("/_mock/behaviour", json={"fail_rate": 1.0, "fail_status": 503})
        assert broken.status == 200
        try:
            before = await retries_counted(setup.app, "modelserver/default/failing")
            replies = await served_by(setup.client, "/v1/models/failing/infer", n=60, concurrency=4)
            stats = await setup.app.envoy.stats(prefix="cluster.modelserver/default/failing.upstream_rq_retry")
            assert Counter(r.status for r in replies) == {200: 60}, " ".join(f"{k.rsplit('.', 1)[1]}={v}" for k, v in stats.items() if v)
            healthy_replica = {r.body["served_by"]["replica"] for r in replies}
            assert len(healthy_replica) == 1
            await asyncio.sleep(0.2)
            # the broken replica was tried, and the retry went to the other one
            assert await retries_counted(setup.app, "modelserver/default/failing") - before >= 1
        finally:
            await direct.post("/_mock/behaviour", json={"fail_rate": 0.0})


async def test_rate_limit_answers_429_with_ratelimit_headers_after_the_burst(setup: Setup) -> None:
    replies = [await setup.client.post("/v1/models/limited/infer") for _ in range(10)]
    statuses = [r.status for r in replies]
    assert statuses[:5] == [200] * 5, statuses  # the burst
    assert 429 in statuses[5:], statuses
    limited = next(r for r in replies if r.status == 429)
    assert limited.served_by is None  # never reached the model
    assert limited.headers.get("x-ratelimit-limit") == "5", limited.headers
    assert limited.headers.get("x-ratelimit-remaining") == "0", limited.headers
    assert int(limited.headers.get("x-ratelimit-reset", "-1")) >= 0, limited.headers
    # other servers on the same port are not limited
    others = await served_by(setup.client, "/v1/models/slow/infer", n=10)
    assert {r.status for r in others} == {200}
    # the bucket refills at requestsPerSecond
    await asyncio.sleep(1.2)
    assert (await setup.client.post("/v1/models/limited/infer")).status == 200
