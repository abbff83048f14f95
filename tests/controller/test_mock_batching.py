"""The mock engine's queueing model (issue #18): concurrency, KV admission, step times
that grow with the batch and KV use, prefill by prompt length, the prefix cache; and
what the engine builds on it: load reports (ORCA) and the runtime LoRA API."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.engines.mock_batching import BLOCK_TOKENS, PrefixCache, Scheduler, Sequence, Timing
from controller.engines.mock_engine import Behaviour, Identity, MockEngine, parse_adapters
from xds.data.orca.v3 import orca_load_report_pb2


def words(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


async def consume(scheduler: Scheduler, prompt: list[str], tokens: int) -> float:
    started = time.monotonic()
    async for _ in scheduler.generate(prompt, tokens):
        pass
    return time.monotonic() - started


def test_prefix_cache_hits_whole_leading_blocks_only() -> None:
    cache = PrefixCache()
    prompt = words(3 * BLOCK_TOKENS + 5)
    assert cache.lookup_and_insert(prompt, 10_000) == 0
    assert cache.lookup_and_insert(prompt, 10_000) == 3 * BLOCK_TOKENS
    changed = ["other", *prompt[1:]]  # a different first token: no block of it matches
    assert cache.lookup_and_insert(changed, 10_000) == 0
    tail_changed = [*prompt[:BLOCK_TOKENS + 3], "x", *prompt[BLOCK_TOKENS + 4:]]
    assert cache.lookup_and_insert(tail_changed, 10_000) == BLOCK_TOKENS
    assert cache.queries == 4 * len(prompt) and cache.hits == 4 * BLOCK_TOKENS


def test_prefix_cache_evicts_least_recently_used_blocks() -> None:
    cache = PrefixCache()
    first, second = words(2 * BLOCK_TOKENS, "a"), words(2 * BLOCK_TOKENS, "b")
    cache.lookup_and_insert(first, 2 * BLOCK_TOKENS)
    cache.lookup_and_insert(second, 2 * BLOCK_TOKENS)  # room for two blocks: `first` is gone
    assert cache.lookup_and_insert(first, 4 * BLOCK_TOKENS) == 0


async def test_concurrency_is_bounded_and_the_rest_waits() -> None:
    timing = Timing(decode_ms=20, max_running=2)
    scheduler = Scheduler(lambda: timing)
    tasks = [asyncio.create_task(consume(scheduler, words(4), 5)) for _ in range(5)]
    await asyncio.sleep(0.03)
    assert (len(scheduler.running), len(scheduler.waiting)) == (2, 3)
    assert 0 < scheduler.load() and scheduler.load() == pytest.approx(1 + 3 / 2)
    durations = sorted(await asyncio.gather(*tasks))
    assert durations[-1] >= 2.5 * durations[0]  # the last pair waited for two batches
    assert scheduler.tpot_count == 5 * 4  # every token after each request's first
    assert not scheduler.running and scheduler.kv_used == 0


async def test_a_prompt_waits_for_kv_room_in_order() -> None:
    timing = Timing(decode_ms=10, kv_tokens=1000, max_running=8)
    scheduler = Scheduler(lambda: timing)
    long_one = asyncio.create_task(consume(scheduler, words(700), 10))
    await asyncio.sleep(0.005)
    second = asyncio.create_task(consume(scheduler, words(700), 10))  # does not fit beside the first
    short = asyncio.create_task(consume(scheduler, words(10), 2))  # behind it: FIFO, no overtaking
    await asyncio.sleep(0.03)
    assert len(scheduler.running) == 1 and len(scheduler.waiting) == 2
    assert scheduler.kv_use() == pytest.approx(0.71)
    first_s, second_s, short_s = await asyncio.gather(long_one, second, short)
    assert second_s > first_s * 1.5 and short_s > first_s


def test_step_time_grows_with_batch_kv_and_prefill_and_shrinks_with_speed() -> None:
    base = Timing(decode_ms=10, batch_slowdown=0.5, kv_slowdown=1.0, kv_tokens=1000, prefill_ms_per_token=0.1)
    scheduler = Scheduler(lambda: base)
    assert scheduler.step_ms(base, []) == pytest.approx(10)
    scheduler.running = [object(), object(), object()]  # type: ignore[list-item]
    scheduler.kv_used = 500
    assert scheduler.step_ms(base, []) == pytest.approx(10 * (1 + 0.5 * 2) * (1 + 0.5))
    assert scheduler.step_ms(replace(base, speed=0.5), []) == pytest.approx(2 * 10 * 2 * 1.5)
    assert scheduler.step_ms(base, [Sequence(words(100), 1, cached=40)]) == pytest.approx(10 * 2 * 1.5 + 60 * 0.1)


async def test_cached_prefix_is_not_prefilled_again() -> None:
    timing = Timing(decode_ms=1, prefill_ms_per_token=0.5, prefix_cache_tokens=10_000)
    scheduler = Scheduler(lambda: timing)
    prompt = words(200)
    cold = await consume(scheduler, prompt, 1)  # ~100 ms of prefill
    warm = await consume(scheduler, prompt, 1)  # 8 ms for the 8 tokens past the last full block
    assert cold > 0.09 and warm < cold / 3
    assert scheduler.prefix_cache.hits == 192


@pytest.fixture
async def batching() -> AsyncIterator[tuple[MockEngine, TestClient]]:
    behaviour = Behaviour(completion_tokens=4, decode_ms=5, max_running=4)
    engine = MockEngine(Identity("llama", "infer", "default", 1), behaviour, adapters={"sql": "/a/sql"})
    client = TestClient(TestServer(engine.app(), host="127.0.0.1"))
    await client.start_server()
    try:
        yield engine, client
    finally:
        await client.close()


async def test_streamed_answer_starts_with_its_first_token(batching: tuple[MockEngine, TestClient]) -> None:
    engine, client = batching
    engine.behaviour.update({"prefill_ms_per_token": 2.0})
    started = time.monotonic()
    resp = await client.post("/v1/chat/completions", json={
        "model": "llama", "stream": True, "messages": [{"role": "user", "content": " ".join(words(50))}]})
    headers_at = time.monotonic() - started
    text = await resp.text()
    assert resp.status == 200 and headers_at >= 0.1  # 50 tokens of prefill before the first byte
    assert text.count("data: ") == 4 + 3  # role, 4 tokens, finish, [DONE]


async def test_load_reports_in_each_format(batching: tuple[MockEngine, TestClient]) -> None:
    _, client = batching
    body = {"prompt": "a b c", "max_tokens": 3}
    plain = await client.post("/v1/completions", json=body)
    assert "endpoint-load-metrics" not in plain.headers  # only when asked, as vLLM
    text = await client.post("/v1/completions", json=body, headers={"endpoint-load-metrics-format": "text"})
    report = text.headers["endpoint-load-metrics"]
    assert report.startswith("TEXT ")
    pairs = dict(p.split("=") for p in report[5:].split(", "))
    assert float(pairs["application_utilization"]) > 0  # the request itself was running
    assert float(pairs["rps_fractional"]) > 0  # the plain request completed before
    assert {"named_metrics.kv_cache_usage_perc", "named_metrics.num_requests_waiting"} <= pairs.keys()
    as_json = await client.post("/v1/completions", json=body, headers={"endpoint-load-metrics-format": "JSON"})
    parsed = json.loads(as_json.headers["endpoint-load-metrics"][5:])
    assert parsed["application_utilization"] > 0 and "num_requests_running" in parsed["named_metrics"]
    binary = await client.post("/v1/completions", json=body, headers={"endpoint-load-metrics-format": "BIN"})
    proto = orca_load_report_pb2.OrcaLoadReport()
    proto.ParseFromString(base64.b64decode(binary.headers["endpoint-load-metrics"][4:]))
    assert proto.rps_fractional > 0 and "kv_cache_usage_perc" in proto.named_metrics


async def test_adapters_are_listed_served_unloaded_and_refused(batching: tuple[MockEngine, TestClient]) -> None:
    engine, client = batching
    listing = await (await client.get("/v1/models")).json()
    assert [(m["id"], m["parent"]) for m in listing["data"]] == [("llama", None), ("sql", "llama")]
    served = await client.post("/v1/completions", json={"model": "sql", "prompt": "x"})
    body = await served.json()
    assert served.status == 200 and body["model"] == "sql" and body["served_by"]["adapter"] == "sql"
    base = await (await client.post("/v1/completions", json={"model": "anything", "prompt": "x"})).json()
    assert "adapter" not in base["served_by"]  # other names: the base model (the mock is lenient)
    assert (await client.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})).status == 200
    gone = await client.post("/v1/completions", json={"model": "sql", "prompt": "x"})
    assert gone.status == 404 and (await gone.json())["error"]["type"] == "NotFoundError"
    assert (await client.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})).status == 404
    assert (await client.post("/v1/load_lora_adapter", json={"lora_name": "chat", "lora_path": "/a/c"})).status == 200
    assert (await client.post("/v1/load_lora_adapter", json={"lora_name": "chat"})).status == 400  # loaded already
    proxied = await client.post("/v1/load_lora_adapter", json={"lora_name": "x"}, headers={"x-forwarded-proto": "http"})
    assert proxied.status == 403 and "x" not in engine.adapters
    metrics = await (await client.get("/metrics")).text()
    assert 'running_lora_adapters="chat"' in metrics and "vllm:prefix_cache_hits_total" in metrics
    assert "vllm:time_per_output_token_seconds_count" in metrics


async def test_new_behaviour_fields_are_validated(batching: tuple[MockEngine, TestClient]) -> None:
    _, client = batching
    for bad in ({"speed": 0}, {"kv_tokens": -1}, {"decode_ms": "fast"}, {"max_running": 0}, {"batch_slowdown": True}):
        assert (await client.post("/_mock/behaviour", json=bad)).status == 400, bad
    ok = await client.post("/_mock/behaviour", json={"speed": 0.5, "kv_tokens": 4000, "max_running": 2})
    assert ok.status == 200 and (await ok.json())["behaviour"]["speed"] == 0.5


def test_adapters_flag() -> None:
    assert parse_adapters("a, b=/x/b,,") == {"a": "a", "b": "/x/b"}
