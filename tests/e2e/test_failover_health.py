"""Issue #5, "Done when": failover to the ModelRoute's fallback when every replica of a
destination is gone; `/health`, `/ready` (503 once the port's backends are gone) and
`/metrics` on every ModelServer port."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from modelroute.embedded import Embedded
from tests.e2e.harness import Client, dest, infer, infer_key, route, running, server, served_by, wait_for, write_manifests
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@dataclass(frozen=True)
class Setup:
    app: Embedded
    shared: Client  # port with the ModelRoute (primary + fallback)
    solo: Client    # port with one ModelServer only


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    directory = tmp_path_factory.mktemp("failover")
    shared, solo = free_port(), free_port()
    write_manifests(directory / "all.yaml", [
        infer("primary", 2), infer("backup"), infer("solo"),
        server("primary", port=shared, path="/v1/models/primary"),
        server("backup", port=shared, path="/v1/models/backup"),
        server("solo", port=solo, path="/v1/models/solo"),
        route("failover", path="/v1/models/fo", routes=[dest("primary")],
              fallback={"modelServerRef": {"name": "backup"}}),
    ])
    async with running(directory) as app, Client(shared) as c1, Client(solo) as c2:
        yield Setup(app, c1, c2)


async def test_health_answers_on_every_port(setup: Setup) -> None:
    for client in (setup.shared, setup.solo):
        reply = await client.get("/health")
        assert reply.status == 200
        assert reply.served_by is None  # Envoy answers itself, no backend involved


async def test_metrics_is_prometheus_text_of_envoys_stats(setup: Setup) -> None:
    await served_by(setup.solo, "/v1/models/solo/infer", n=3)
    reply = await setup.solo.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body
    assert isinstance(text, str)
    assert "# TYPE envoy_cluster_upstream_rq_total counter" in text
    samples = [line for line in text.splitlines() if line.startswith("envoy_cluster_upstream_rq_total{")
               and "solo" in line]
    assert samples and float(samples[0].rsplit(" ", 1)[1]) >= 3, samples


async def test_ready_turns_503_when_the_ports_backends_are_gone(setup: Setup) -> None:
    for client in (setup.solo, setup.shared):
        async def ready(client: Client = client) -> bool:
            return (await client.get("/ready")).status == 200
        await wait_for(ready, timeout=10, what=f"{client.base}/ready → 200 while every backend is up")
    await setup.app.replicas.stop_infer(infer_key("solo"))
    try:
        async def not_ready() -> bool:
            return (await setup.solo.get("/ready")).status == 503
        await wait_for(not_ready, timeout=10, what="/ready → 503 after every solo replica stopped")
        for _ in range(5):
            assert (await setup.solo.get("/ready")).status == 503
        assert (await setup.solo.get("/health")).status == 200  # Envoy itself is still up
        assert (await setup.shared.get("/ready")).status == 200  # another port is unaffected
    finally:
        await setup.app.replicas.resume_infer(infer_key("solo"))

    async def ready_again() -> bool:
        return (await setup.solo.get("/ready")).status == 200
    await wait_for(ready_again, timeout=15, what="/ready → 200 after the replicas came back")


async def test_failover_to_fallback_when_every_replica_of_the_destination_stops(setup: Setup) -> None:
    before = await served_by(setup.shared, "/v1/models/fo/infer", n=20)
    assert {(r.status, r.served_by) for r in before} == {(200, "primary")}
    await setup.app.replicas.stop_infer(infer_key("primary"))
    try:
        async def on_backup() -> bool:
            replies = await served_by(setup.shared, "/v1/models/fo/infer", n=5)
            return {(r.status, r.served_by) for r in replies} == {(200, "backup")}
        await wait_for(on_backup, timeout=10, what="requests to fail over to the fallback")
        replies = await served_by(setup.shared, "/v1/models/fo/infer", n=200)
        assert Counter((r.status, r.served_by) for r in replies) == {(200, "backup"): 200}
        assert {r.body["path"] for r in replies} == {"/v1/models/fo/infer"}
    finally:
        await setup.app.replicas.resume_infer(infer_key("primary"))

    async def back_on_primary() -> bool:
        replies = await served_by(setup.shared, "/v1/models/fo/infer", n=5)
        return {(r.status, r.served_by) for r in replies} == {(200, "primary")}
    await wait_for(back_on_primary, timeout=15, what="traffic to return to the primary")
