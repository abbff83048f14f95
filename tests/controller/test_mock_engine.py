"""The mock engine's protocols, identity, injected faults and metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.engines.mock_engine import Behaviour, Identity, MockEngine
from tests.support import REPO, free_port, stop_process, wait_until


@pytest.fixture
async def engine_client() -> AsyncIterator[tuple[MockEngine, TestClient]]:
    engine = MockEngine(Identity("llama", "llama-infer", "team-a", 2), Behaviour(completion_tokens=5), seed=7)
    client = TestClient(TestServer(engine.app(), host="127.0.0.1"))
    await client.start_server()
    try:
        yield engine, client
    finally:
        await client.close()


async def test_chat_on_any_prefix_reports_identity_path_and_usage(engine_client) -> None:
    _, client = engine_client
    resp = await client.post("/v1/models/llama/v1/chat/completions?x=1",
                             json={"model": "llama", "messages": [{"role": "user", "content": "one two three"}]})
    body = await resp.json()
    assert resp.status == 200
    assert resp.headers["x-modelinfer"] == "team-a/llama-infer"
    assert resp.headers["x-replica"] == "2"
    assert body["served_by"]["modelinfer"] == "llama-infer" and body["served_by"]["replica"] == 2
    assert body["path"] == "/v1/models/llama/v1/chat/completions?x=1"
    assert body["object"] == "chat.completion"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


async def test_completions_respects_max_tokens(engine_client) -> None:
    _, client = engine_client
    resp = await client.post("/a/v1/completions", json={"prompt": "hello big world again", "max_tokens": 2})
    body = await resp.json()
    assert body["object"] == "text_completion"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert body["choices"][0]["text"] == "tok0 tok1"


async def test_kserve_infer_names_outputs_after_inputs(engine_client) -> None:
    _, client = engine_client
    resp = await client.post("/v1/models/llama-7b/infer",
                             json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
    body = await resp.json()
    assert resp.status == 200
    assert body["model_name"] == "llama"
    assert body["outputs"][0]["data"] == ["mock result for text"]


async def test_health_unknown_path_and_bad_json(engine_client) -> None:
    _, client = engine_client
    assert (await client.get("/health")).status == 200
    missing = await client.post("/v1/models/x/embeddings", json={})
    assert missing.status == 404 and "no handler" in (await missing.json())["error"]
    bad = await client.post("/infer", data=b"{nope", headers={"content-type": "application/json"})
    assert bad.status == 400


async def test_per_request_status_and_delay_headers(engine_client) -> None:
    _, client = engine_client
    resp = await client.post("/infer", json={}, headers={"x-mock-status": "503"})
    assert resp.status == 503
    assert resp.headers["x-replica"] == "2"  # failures still say who answered
    loop = asyncio.get_running_loop()
    start = loop.time()
    slow = await client.post("/infer", json={}, headers={"x-mock-delay-ms": "150"})
    assert slow.status == 200 and loop.time() - start >= 0.15
    assert (await client.post("/infer", json={}, headers={"x-mock-status": "abc"})).status == 400


async def test_runtime_behaviour_change_and_validation(engine_client) -> None:
    engine, client = engine_client
    ok = await client.post("/_mock/behaviour", json={"fail_rate": 1.0, "fail_status": 502})
    assert ok.status == 200 and (await ok.json())["behaviour"]["fail_status"] == 502
    assert (await client.post("/v1/completions", json={"prompt": "x"})).status == 502
    bad = await client.post("/_mock/behaviour", json={"fail_rate": 3})
    assert bad.status == 400 and "fail_rate" in (await bad.json())["error"]
    assert engine.behaviour.fail_rate == 1.0  # a rejected update changes nothing
    assert (await client.post("/_mock/behaviour", json={"bogus": 1})).status == 400
    assert (await client.post("/_mock/behaviour", json={"healthy": "no"})).status == 400
    assert (await client.post("/_mock/behaviour", json={"healthy": False})).status == 200
    assert (await client.get("/health")).status == 503


async def test_fail_rate_is_a_fraction(engine_client) -> None:
    engine, client = engine_client
    engine.behaviour.update({"fail_rate": 0.5})
    statuses = [(await client.post("/infer", json={})).status for _ in range(200)]
    failures = statuses.count(500)
    assert 60 < failures < 140, failures


async def test_metrics_show_running_requests_and_tokens(engine_client) -> None:
    engine, client = engine_client
    slow = asyncio.create_task(client.post("/v1/completions", json={"prompt": "a b"},
                                           headers={"x-mock-delay-ms": "300"}))
    for _ in range(100):
        if engine.running:
            break
        await asyncio.sleep(0.01)
    text = await (await client.get("/metrics")).text()
    assert 'vllm:num_requests_running{model_name="llama"} 1' in text
    assert 'vllm:num_requests_waiting{model_name="llama"} 0' in text
    assert "vllm:kv_cache_usage_perc" in text
    (await slow).release()
    text = await (await client.get("/metrics")).text()
    assert 'vllm:num_requests_running{model_name="llama"} 0' in text
    assert 'vllm:prompt_tokens_total{model_name="llama"} 2' in text


async def test_requests_over_capacity_are_counted_waiting() -> None:
    engine = MockEngine(Identity("m", "i", "default", 0), Behaviour(), max_running=1)
    async with TestClient(TestServer(engine.app(), host="127.0.0.1")) as client:
        reqs = [asyncio.create_task(client.post("/infer", json={}, headers={"x-mock-delay-ms": "200"}))
                for _ in range(3)]
        for _ in range(100):
            if engine.waiting == 2:
                break
            await asyncio.sleep(0.01)
        assert (engine.running, engine.waiting) == (1, 2)
        for r in await asyncio.gather(*reqs):
            assert r.status == 200
            r.release()


def test_runs_as_a_module_and_exits_cleanly_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "controller.engines.mock_engine", "--port", str(port), "--model", "m",
                             "--infer", "mi", "--replica", "3", "--fail-status", "418", "--fail-rate", "1"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(healthy, timeout=15, what="mock engine /health")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/x/infer", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 418
        assert err.value.headers["x-replica"] == "3"
        assert json.loads(err.value.read())["served_by"]["modelinfer"] == "mi"
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        stop_process(proc)
        if proc.stderr:
            proc.stderr.close()


def _events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


async def test_chat_streams_openai_chunks_with_a_final_usage_chunk(engine_client) -> None:
    engine, client = engine_client
    resp = await client.post("/v1/chat/completions", json={
        "model": "llama", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "one two three"}]})
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
    *chunks, done = _events(await resp.text())
    assert done == "[DONE]"
    parsed = [json.loads(c) for c in chunks]
    assert {c["object"] for c in parsed} == {"chat.completion.chunk"} and len({c["id"] for c in parsed}) == 1
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in parsed if c["choices"])
    assert text == "tok0 tok1 tok2 tok3 tok4"
    assert parsed[-2]["choices"][0]["finish_reason"] == "length"
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5,
                                                                   "total_tokens": 8}
    assert all(c["usage"] is None for c in parsed[:-1])
    assert engine.counts["generation_tokens"] == 5


async def test_completions_stream_without_usage_unless_asked(engine_client) -> None:
    _, client = engine_client
    resp = await client.post("/v1/completions", json={"prompt": "a b", "stream": True, "max_tokens": 2},
                             headers={"x-mock-chunk-delay-ms": "50"})
    started = asyncio.get_running_loop().time()
    *chunks, done = _events(await resp.text())
    assert asyncio.get_running_loop().time() - started >= 0.09  # two tokens, 50 ms apart
    parsed = [json.loads(c) for c in chunks]
    assert done == "[DONE]" and all("usage" not in c for c in parsed)
    assert [c["choices"][0]["text"] for c in parsed] == ["tok0", " tok1", ""]


async def test_the_control_endpoint_refuses_proxied_requests(engine_client) -> None:
    engine, client = engine_client
    for method in ("GET", "POST"):
        resp = await client.request(method, "/_mock/behaviour", json={"fail_rate": 1.0},
                                    headers={"x-forwarded-proto": "http"})
        assert resp.status == 403 and "direct requests only" in (await resp.json())["error"]
    assert engine.behaviour.fail_rate == 0.0
    assert (await client.post("/_mock/behaviour", json={"fail_rate": 0.5})).status == 200
    assert engine.behaviour.fail_rate == 0.5
