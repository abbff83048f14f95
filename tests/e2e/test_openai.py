"""Issue #17, OpenAI compatibility and request semantics through the real Envoy gateway,
with the official `openai` client where a user would use it: routing by `model`
(streamed or not), `GET /v1/models`, SSE passing through unbuffered, timeouts that cut a
stalled generation but never one that keeps sending, `application/json; charset=utf-8`,
percent-encoded paths, and the mock engine's control endpoint out of the gateway's reach.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio

from modelroute.embedded import Embedded
from tests.e2e.harness import Client, dest, infer, infer_key, route, running, server, write_manifests
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CHAT = {"messages": [{"role": "user", "content": "hello there"}]}


@dataclass(frozen=True)
class Setup:
    app: Embedded
    port: int  # the OpenAI front door /v1, by model
    other: int  # a catch-all server on "/" and one on a percent-encoded path
    client: Client
    openai: openai.AsyncOpenAI


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    directory = tmp_path_factory.mktemp("openai")
    port, other = free_port(), free_port()
    write_manifests(directory / "all.yaml", [
        infer("a"), infer("b"), infer("fb"), infer("slow"), infer("root"), infer("cafe"),
        server("fb", port=port, path="/v1"),
        server("a", port=port, path="/v1/models/a"),
        server("b", port=port, path="/v1/models/b"),
        server("slow", port=port, path="/v1/models/slow", routing={"timeout": "1s", "retries": 0}),
        route("openai", path="/v1", fallback={"modelServerRef": {"name": "fb"}}, routes=[
            {**dest("a"), "match": {"model": "model-a"}},
            {**dest("b"), "match": {"model": "model-b"}},
            {**dest("slow"), "match": {"model": "slow-model"}},
        ]),
        server("root", port=other, path="/"),
        server("cafe", port=other, path="/v1/models/caf%C3%A9"),
    ])
    async with running(directory) as app, Client(port) as client:
        gateway = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-checked", max_retries=0,
                                     http_client=openai.DefaultAsyncHttpxClient(trust_env=False))
        try:
            yield Setup(app, port, other, client, gateway)
        finally:
            await gateway.close()


def served(obj: Any) -> str:
    """Which ModelInfer answered (the mock engine's `served_by`, an extra field)."""
    return str((obj.model_extra or {})["served_by"]["modelinfer"])


async def test_the_openai_client_is_routed_by_model(setup: Setup) -> None:
    chat = await setup.openai.chat.completions.create(model="model-a", max_tokens=3, **CHAT)
    assert (chat.model, served(chat), chat.choices[0].message.content) == ("model-a", "a", "tok0 tok1 tok2")
    assert chat.usage is not None and chat.usage.completion_tokens == 3
    completion = await setup.openai.completions.create(model="model-b", prompt="hi", max_tokens=2)
    assert (served(completion), completion.choices[0].text) == ("b", "tok0 tok1")
    other = await setup.openai.chat.completions.create(model="someone-else", **CHAT)
    assert served(other) == "fb"  # an unknown model: the route's fallback


async def test_streaming_chat_yields_chunks_as_they_come_and_a_final_usage(setup: Setup) -> None:
    started = time.monotonic()
    stream = await setup.openai.chat.completions.create(
        model="model-a", max_tokens=5, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-mock-chunk-delay-ms": "250"}, **CHAT)
    text, arrivals, usage, who = "", [], None, set()
    async for chunk in stream:
        who.add(served(chunk))
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            arrivals.append(time.monotonic() - started)
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "tok0 tok1 tok2 tok3 tok4" and who == {"a"}
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (2, 5)
    # Time to first token is the engine's, not the whole answer's: nothing buffers the stream.
    assert arrivals[0] < 0.8 and arrivals[-1] - arrivals[0] > 0.8, arrivals


async def test_streaming_completions(setup: Setup) -> None:
    stream = await setup.openai.completions.create(model="model-b", prompt="hi", max_tokens=3, stream=True)
    pieces = [(served(chunk), chunk.choices[0].text) async for chunk in stream]
    assert "".join(text for _, text in pieces) == "tok0 tok1 tok2" and {who for who, _ in pieces} == {"b"}


async def test_v1_models_lists_what_the_gateway_routes(setup: Setup) -> None:
    models = [m async for m in setup.openai.models.list()]
    assert [(m.id, m.object, m.owned_by) for m in models] == [
        ("model-a", "model", "default"), ("model-b", "model", "default"), ("slow-model", "model", "default")]
    reply = await setup.client.get("/v1/models")
    assert reply.headers["content-type"] == "application/json"
    assert (await setup.client.post("/v1/models")).served_by == "fb"  # GET only; the rest goes on as before


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON",
                                          "application/json;charset=UTF-8"])
async def test_model_routing_reads_json_with_parameters(setup: Setup, content_type: str) -> None:
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.post(f"http://127.0.0.1:{setup.port}/v1/chat/completions",
                                data=json.dumps({"model": "model-b", **CHAT}).encode(),
                                headers={"content-type": content_type}) as response:
            body = await response.json(content_type=None)
    assert (response.status, body["served_by"]["modelinfer"]) == (200, "b")


async def _read_stream(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, str, float]:
    """(status, everything received, seconds) of a streamed answer, however it ends."""
    started = time.monotonic()
    received = b""
    async with aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.post(url, json=body, headers=headers) as response:
            try:
                async for data in response.content.iter_any():
                    received += data
            except aiohttp.ClientPayloadError:  # the proxy reset a stream that had started
                pass
            return response.status, received.decode(), time.monotonic() - started


async def test_a_generation_that_keeps_sending_outlives_the_timeout(setup: Setup) -> None:
    """routing.timeout is 1s here: a 2.4 s stream with a chunk every 0.4 s is not cut."""
    status, text, took = await _read_stream(f"http://127.0.0.1:{setup.port}/v1/chat/completions",
                                            {"model": "slow-model", "max_tokens": 6, "stream": True, **CHAT},
                                            {"x-mock-chunk-delay-ms": "400"})
    assert status == 200 and text.endswith("data: [DONE]\n\n") and text.count('"content": "') == 7, text
    assert took > 2.2


async def test_a_stalled_generation_is_cut_at_the_timeout(setup: Setup) -> None:
    status, text, took = await _read_stream(f"http://127.0.0.1:{setup.port}/v1/chat/completions",
                                            {"model": "slow-model", "max_tokens": 6, "stream": True, **CHAT},
                                            {"x-mock-chunk-delay-ms": "3000"})
    assert status == 200 and "[DONE]" not in text and '"content": "tok0"' not in text
    assert 0.9 < took < 2.5, took  # cut after 1 s of silence, not after the 18 s the engine would take
    silent = await setup.client.post("/v1/chat/completions", json={"model": "slow-model", **CHAT},
                                     headers={"x-mock-delay-ms": "3000"})
    assert silent.status == 504 and 0.9 < silent.elapsed < 2.5


async def test_a_percent_encoded_path_matches_what_clients_send(setup: Setup) -> None:
    async with Client(setup.other) as other:
        reply = await other.post("/v1/models/café/infer")  # sent as /v1/models/caf%C3%A9/infer
        assert (reply.status, reply.served_by, reply.body["path"]) == (200, "cafe", "/v1/models/caf%C3%A9/infer")
        assert (await other.post("/v1/models/cafe/infer")).served_by == "root"


async def test_the_mock_control_endpoint_is_out_of_the_gateways_reach(setup: Setup) -> None:
    async with Client(setup.other) as other:
        for method in ("GET", "POST"):
            reply = await other.request(method, "/_mock/behaviour", json={"fail_rate": 1.0})
            assert reply.status == 403 and reply.served_by == "root", reply
        assert (await other.post("/v1/models/x/infer")).status == 200  # the behaviour did not change
    (endpoint,) = setup.app.replicas.endpoints()[infer_key("root")]
    async with Client(endpoint.port) as direct:  # the replica itself still takes it
        assert (await direct.get("/_mock/behaviour")).body["behaviour"]["fail_rate"] == 0.0
