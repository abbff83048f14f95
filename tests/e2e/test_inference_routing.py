"""Issue #18 through the real Envoy and real replicas: LoRA adapters go only to replicas
that have them (and leave a replica within 1 s of it unloading one), also across a
ModelRoute's failover, prefixAffinity keeps a prompt prefix on one replica, loadAware
weighs a slow replica down.

Replicas are the mock engine; adapters are loaded and unloaded on a replica directly,
through its runtime LoRA API (vLLM's), as an operator or an adapter manager would. A
replica asked for an adapter it has unloaded answers 404 (as vLLM does), so a request
routed to the wrong replica shows as a failure.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from controller.local.replicas import http_post_json
from modelroute.embedded import Embedded
from tests.e2e.harness import Client, dest, infer_key, route, running, server, write_manifests
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WORKLOAD = "workload.matrixinfer.ai/v1alpha1"
MOVE_WITHIN_S = 1.0  # an adapter unloaded from a replica: none of its requests go there after this


def infer_with(name: str, replicas: int, adapters: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"modelRef": {"name": "llama"}, "replicas": replicas}
    if adapters:
        spec["adapters"] = [{"name": a} for a in adapters]
    return {"apiVersion": WORKLOAD, "kind": "ModelInfer", "metadata": {"name": name}, "spec": spec}


@dataclass(frozen=True)
class Setup:
    app: Embedded
    port: int
    client: Client

    def replica_port(self, infer: str, index: int) -> int:
        endpoint = self.app.replicas.endpoints()[infer_key(infer)][index]
        assert endpoint.port is not None
        return endpoint.port


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    directory = tmp_path_factory.mktemp("inference")
    port = free_port()
    write_manifests(directory / "all.yaml", [
        infer_with("lora", 3, ["sql-lora", "chat-lora"]),
        infer_with("prefix", 3),
        infer_with("load", 3),
        infer_with("main", 2, ["chat-lora", "sql-lora"]),
        infer_with("spare", 1, ["chat-lora"]),
        server("lora", port=port, path="/v1/models/lora"),
        server("main", port=port, path="/v1/models/main"),
        server("spare", port=port, path="/v1/models/spare"),
        route("paired", path="/v1/models/paired", routes=[dest("main")],
              fallback={"modelServerRef": {"name": "spare"}}),
        server("prefix", port=port, path="/v1/models/prefix", loadBalancing="prefixAffinity"),
        server("load", port=port, path="/v1/models/load", loadBalancing="loadAware"),
    ])
    async with running(directory) as app, Client(port) as client:
        yield Setup(app, port, client)


def chat(model: str, text: str = "hello") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def set_adapter(setup: Setup, infer: str, index: int, adapter: str, *, loaded: bool) -> None:
    path = "/v1/load_lora_adapter" if loaded else "/v1/unload_lora_adapter"
    body = {"lora_name": adapter, "lora_path": f"/adapters/{adapter}"} if loaded else {"lora_name": adapter}
    assert await http_post_json(setup.replica_port(infer, index), path, body) == 200


async def wait_probed(setup: Setup, infer: str, index: int, adapter: str, *, present: bool, timeout: float) -> None:
    """Until the control plane's endpoints say `adapter` is (not) on that replica."""
    deadline = time.monotonic() + timeout
    while True:
        endpoint = setup.app.probe.endpoints()[infer_key(infer)][index]
        if (adapter in (endpoint.adapters or ())) == present:
            return
        assert time.monotonic() < deadline, f"{adapter} still {'absent' if present else 'present'} on {infer}#{index}"
        await asyncio.sleep(0.02)


async def test_adapter_requests_reach_only_replicas_that_have_the_adapter(setup: Setup) -> None:
    await set_adapter(setup, "lora", 1, "chat-lora", loaded=False)
    await set_adapter(setup, "lora", 2, "chat-lora", loaded=False)
    await wait_probed(setup, "lora", 2, "chat-lora", present=False, timeout=5)
    await asyncio.sleep(0.5)  # the push reaches Envoy (measured in the next test)
    path = "/v1/models/lora/v1/chat/completions"
    replies = await asyncio.gather(*(setup.client.post(path, json=chat("chat-lora")) for _ in range(60)))
    assert Counter(r.status for r in replies) == {200: 60}
    assert {r.replica for r in replies} == {0}
    assert {r.body["served_by"]["adapter"] for r in replies} == {"chat-lora"}
    assert {r.body["model"] for r in replies} == {"chat-lora"}
    spread = await asyncio.gather(*(setup.client.post(path, json=chat("sql-lora")) for _ in range(60)))
    assert Counter(r.status for r in spread) == {200: 60}
    assert {r.replica for r in spread} == {0, 1, 2}  # every replica has it
    base = await asyncio.gather(*(setup.client.post(path, json=chat("llama")) for _ in range(60)))
    assert {r.replica for r in base} == {0, 1, 2} and "adapter" not in base[0].body["served_by"]
    listing = await setup.client.get("/v1/models/lora/v1/models")  # a replica's own list, through the gateway
    assert listing.status == 200 and {"llama", "sql-lora"} <= {m["id"] for m in listing.body["data"]}
    await set_adapter(setup, "lora", 1, "chat-lora", loaded=True)
    await set_adapter(setup, "lora", 2, "chat-lora", loaded=True)
    await wait_probed(setup, "lora", 2, "chat-lora", present=True, timeout=5)


async def test_unloading_an_adapter_moves_its_traffic_within_a_second(setup: Setup) -> None:
    path = "/v1/models/lora/v1/chat/completions"
    await wait_probed(setup, "lora", 0, "sql-lora", present=True, timeout=5)
    samples: list[tuple[float, int, int | None]] = []  # (sent, status, replica)
    stop = asyncio.Event()

    async def one() -> None:
        sent = time.monotonic()
        reply = await setup.client.post(path, json=chat("sql-lora"))
        samples.append((sent, reply.status, reply.replica))

    async def load() -> None:
        tasks = []
        while not stop.is_set():
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)

    runner = asyncio.create_task(load())
    await asyncio.sleep(1.0)
    unloaded = time.monotonic()
    await set_adapter(setup, "lora", 0, "sql-lora", loaded=False)
    await asyncio.sleep(MOVE_WITHIN_S + 1.0)
    stop.set()
    await runner
    before = [s for s in samples if s[0] < unloaded]
    assert 0 in {s[2] for s in before}, "replica 0 served sql-lora before it unloaded it"
    reached = [s[0] - unloaded for s in samples if s[0] >= unloaded and (s[2] == 0 or s[1] != 200)]
    moved = max(reached, default=0.0)
    after = [s for s in samples if s[0] >= unloaded + MOVE_WITHIN_S]
    assert after and all(s[1] == 200 and s[2] in (1, 2) for s in after), Counter((s[1], s[2]) for s in after)
    assert moved < MOVE_WITHIN_S, f"sql-lora still reached replica 0 {moved:.3f}s after it unloaded it"
    print(f"sql-lora left replica 0 {moved:.3f}s after it unloaded it")  # shown with -s
    await set_adapter(setup, "lora", 0, "sql-lora", loaded=True)
    await wait_probed(setup, "lora", 0, "sql-lora", present=True, timeout=5)


async def test_an_adapter_no_replica_has_is_refused_not_sent_anywhere(setup: Setup) -> None:
    for index in range(3):
        await set_adapter(setup, "lora", index, "chat-lora", loaded=False)
    for index in range(3):
        await wait_probed(setup, "lora", index, "chat-lora", present=False, timeout=5)
    await asyncio.sleep(0.5)
    replies = await asyncio.gather(*(setup.client.post("/v1/models/lora/v1/chat/completions",
                                                       json=chat("chat-lora")) for _ in range(10)))
    assert {r.status for r in replies} == {503}  # Envoy: no host in the adapter's subset
    assert all(r.replica is None for r in replies)
    for index in range(3):
        await set_adapter(setup, "lora", index, "chat-lora", loaded=True)
    for index in range(3):
        await wait_probed(setup, "lora", index, "chat-lora", present=True, timeout=5)


async def test_an_adapter_fails_over_to_the_fallback_only_where_the_fallback_has_it(setup: Setup) -> None:
    """A failover pair is one cluster whose primary's hosts are priority 0 and the
    fallback's priority 1, under the primary's LoRA subsets (docs/decisions.md, "Failover
    clusters"): an adapter request reaches the fallback only when no primary replica has
    the adapter, and only if the fallback declares it; base requests stay on the primary."""
    path = "/v1/models/paired/v1/chat/completions"

    async def answers(model: str, n: int = 30) -> Counter[tuple[int, str | None]]:
        replies = await asyncio.gather(*(setup.client.post(path, json=chat(model)) for _ in range(n)))
        return Counter((r.status, r.served_by) for r in replies)

    for infer, index, adapter in [("main", 0, "chat-lora"), ("main", 1, "chat-lora"), ("main", 0, "sql-lora"),
                                  ("main", 1, "sql-lora"), ("spare", 0, "chat-lora")]:
        await wait_probed(setup, infer, index, adapter, present=True, timeout=5)  # probed since the start
    await asyncio.sleep(0.5)
    assert await answers("chat-lora") == {(200, "main"): 30}
    assert await answers("llama") == {(200, "main"): 30}
    for index in range(2):
        await set_adapter(setup, "main", index, "chat-lora", loaded=False)
        await set_adapter(setup, "main", index, "sql-lora", loaded=False)
    for index in range(2):
        await wait_probed(setup, "main", index, "chat-lora", present=False, timeout=5)
        await wait_probed(setup, "main", index, "sql-lora", present=False, timeout=5)
    await set_adapter(setup, "spare", 0, "sql-lora", loaded=True)  # loaded there, not declared
    await asyncio.sleep(0.5)  # the push reaches Envoy
    assert await answers("chat-lora") == {(200, "spare"): 30}  # no primary replica has it
    assert await answers("sql-lora", 10) == {(503, None): 10}  # the fallback does not declare it
    await set_adapter(setup, "spare", 0, "sql-lora", loaded=False)
    assert await answers("llama") == {(200, "main"): 30}  # the primary is healthy
    await set_adapter(setup, "spare", 0, "chat-lora", loaded=False)
    await wait_probed(setup, "spare", 0, "chat-lora", present=False, timeout=5)
    await asyncio.sleep(0.5)
    assert await answers("chat-lora", 10) == {(503, None): 10}  # nobody has it: refused
    await set_adapter(setup, "main", 1, "chat-lora", loaded=True)
    await set_adapter(setup, "spare", 0, "chat-lora", loaded=True)
    await wait_probed(setup, "main", 1, "chat-lora", present=True, timeout=5)
    await wait_probed(setup, "spare", 0, "chat-lora", present=True, timeout=5)
    await asyncio.sleep(0.5)
    replies = await asyncio.gather(*(setup.client.post(path, json=chat("chat-lora")) for _ in range(30)))
    assert {(r.status, r.served_by, r.replica) for r in replies} == {(200, "main", 1)}  # back on the primary
    await set_adapter(setup, "main", 0, "chat-lora", loaded=True)
    for index in range(2):
        await set_adapter(setup, "main", index, "sql-lora", loaded=True)
    for index in range(2):
        await wait_probed(setup, "main", index, "chat-lora", present=True, timeout=5)
        await wait_probed(setup, "main", index, "sql-lora", present=True, timeout=5)


async def test_prefix_affinity_keeps_a_prompt_prefix_on_one_replica(setup: Setup) -> None:
    path = "/v1/models/prefix/v1/chat/completions"
    homes: dict[int, set[int | None]] = {}
    for group in range(12):
        system = f"you are assistant number {group} " * 60  # longer than the hashed prefix (1 KiB)
        for turn in range(4):
            body = {"model": "llama", "messages": [{"role": "system", "content": system},
                                                   {"role": "user", "content": f"question {turn}"}]}
            forged = {"x-modelroute-prefix-hash": str(turn)}  # a client cannot pick the replica
            reply = await setup.client.post(path, json=body, headers=forged)
            assert reply.status == 200
            homes.setdefault(group, set()).add(reply.replica)
    assert all(len(replicas) == 1 for replicas in homes.values()), homes
    assert len({next(iter(r)) for r in homes.values()}) >= 2, homes  # prefixes spread over replicas


async def test_load_aware_weighs_a_slow_replica_down(setup: Setup) -> None:
    ports = [setup.replica_port("load", i) for i in range(3)]
    for index, port in enumerate(ports):
        behaviour = {"decode_ms": 5.0, "completion_tokens": 8, "speed": 0.2 if index == 0 else 1.0}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/_mock/behaviour", method="POST",
                                         data=json.dumps(behaviour).encode())
        await asyncio.to_thread(lambda r=request: urllib.request.urlopen(r, timeout=5).read())
    path = "/v1/models/load/v1/chat/completions"
    weights: dict[int, int | None] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        await asyncio.gather(*(setup.client.post(path, json=chat("llama")) for _ in range(12)))
        weights = {e.port: e.weight for e in setup.app.probe.endpoints()[infer_key("load")] if e.port is not None}
        if weights.get(ports[0]) is not None and all(weights[p] == 100 for p in ports[1:]) and weights[ports[0]] < 10:
            break
    assert weights.get(ports[0]) is not None and weights[ports[0]] < 10, weights
    envoy = setup.app.envoy
    assert envoy is not None
    await asyncio.sleep(0.5)
    status, text = await envoy.admin_get("/clusters")
    lines = [line for line in text.splitlines() if line.startswith("modelserver/default/load::") and "::weight::" in line]
    by_port = {int(line.split("::")[1].rsplit(":", 1)[1]): int(line.rsplit("::", 1)[1]) for line in lines}
    assert by_port[ports[0]] < 10 and by_port[ports[1]] == by_port[ports[2]] == 100, by_port
    replies = await asyncio.gather(*(setup.client.post(path, json=chat("llama")) for _ in range(90)))
    share = Counter(r.replica for r in replies)
    assert share[0] < share[1] and share[0] < share[2], share
