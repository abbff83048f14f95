"""Shared limits end to end: real Envoys, the rate-limit service, a real Redis (SPEC 3.1
`rateLimit.global`, issue 8).

The embedded gateway binds 127.0.0.2; a second Envoy (an unscoped sidecar) binds
127.0.0.1; both ask the same service, so they share one counter per ModelServer.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from controller.local.envoy_process import EnvoyProcess
from controller.ratelimit.service import DECISIONS, REDIS_ERRORS, ServiceOptions
from modelroute.embedded import Embedded, EmbeddedOptions
from tests.ratelimit.conftest import RedisProcess
from tests.support import free_port
from xds_server.bootstrap import render_dict

pytestmark = pytest.mark.slow

GATEWAY, SIDECAR = "127.0.0.2", "127.0.0.1"
PATH = "/v1/models/m/v1/chat/completions"


def _manifests(port: int, rate_limit: str) -> str:
    return textwrap.dedent(f"""
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
          rateLimit: {rate_limit}
        """)


@asynccontextmanager
async def _deployment(tmp_path: Path, redis: RedisProcess, rate_limit: str, *, fail_open: bool = True,
                      second_envoy: bool = False) -> AsyncIterator[int]:
    port = free_port()
    (tmp_path / "m.yaml").write_text(_manifests(port, rate_limit))
    app = Embedded(EmbeddedOptions(directory=tmp_path, xds_port=0, listen_address=GATEWAY, privileged_port_offset=0,
                                   ratelimit=ServiceOptions(redis_url=redis.url, fail_open=fail_open)))
    sidecar: EnvoyProcess | None = None
    try:
        await app.start()
        await app.wait_ready(timeout=30)
        assert app.plane is not None and app.ratelimit is not None
        if second_envoy:
            bootstrap = render_dict("sidecar", node_id="second", cluster="sidecars", xds_port=app.plane.xds_port,
                                    admin_port=free_port(), ratelimit_port=app.ratelimit.port)
            sidecar = EnvoyProcess(bootstrap, tmp_path / ".modelroute", name="sidecar", log_level="warning")
            await sidecar.start()
        for host in (GATEWAY, SIDECAR) if second_envoy else (GATEWAY,):
            await _eventually_status(f"http://{host}:{port}{PATH}", {200, 429})
        yield port
    finally:
        if sidecar is not None:
            await sidecar.stop()
        await app.stop()


async def _post(session: aiohttp.ClientSession, url: str, body: dict | None = None) -> aiohttp.ClientResponse:
    payload = body if body is not None else {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(url, json=payload) as response:
        await response.read()
        return response


async def _post_chunked(session: aiohttp.ClientSession, url: str, body: dict) -> aiohttp.ClientResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(body).encode()

    async with session.post(url, data=chunks(), headers={"content-type": "application/json"}) as response:
        await response.read()
        return response


async def _eventually_status(url: str, wanted: set[int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        while time.monotonic() < deadline:
            try:
                last = (await _post(session, url)).status
                if last in wanted:
                    return
            except aiohttp.ClientError as err:
                last = err
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url}: expected one of {wanted}, last saw {last}")


async def _load(url: str, seconds: float, concurrency: int) -> list[tuple[float, int]]:
    """(wall-clock time the request was sent, status) of every request, `concurrency` at a
    time. The send time, not the answer's: the limit is decided as the request arrives, and
    a slow answer (a busy machine) must not move an admission into the next second."""
    results: list[tuple[float, int]] = []
    stop = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop:
            sent = time.time()
            status = (await _post(session, url)).status
            results.append((sent, status))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return results


async def test_two_envoys_share_one_limit_of_n_per_second(tmp_path: Path, redis_server: RedisProcess) -> None:
    n = 40
    async with _deployment(tmp_path, redis_server, f"{{enabled: true, requestsPerSecond: {n}, global: true}}",
                           second_envoy=True) as port:
        await asyncio.sleep(1.2)  # the warm-up requests' window is gone
        await _window_start(offset=0.5)
        start = time.time()
        first, second = await asyncio.gather(_load(f"http://{GATEWAY}:{port}{PATH}", 4.8, 6),
                                             _load(f"http://{SIDECAR}:{port}{PATH}", 4.8, 6))
    whole = range(int(start) + 1, int(start) + 5)  # the 4 whole seconds inside the load
    per_second = {s: sum(1 for t, status in first + second if status == 200 and int(t) == s) for s in whole}
    by_envoy = [sum(1 for t, status in r if status == 200 and int(t) in whole) for r in (first, second)]
    statuses = {status for _, status in first + second}
    assert statuses == {200, 429}, statuses
    assert min(by_envoy) > 0.2 * n * len(whole), by_envoy  # both Envoys drew from the one limit
    for second_, admitted in per_second.items():
        assert 0.9 * n <= admitted <= 1.1 * n, per_second
    total = sum(per_second.values())
    assert 0.95 * n * len(whole) <= total <= 1.05 * n * len(whole), per_second
    offered = sum(1 for t, _ in first + second if int(t) in whole)
    assert offered > 2 * total, (offered, total)  # the load was well over the limit


async def test_token_budget_spent_then_429_until_the_window_passes(tmp_path: Path,
                                                                  redis_server: RedisProcess) -> None:
    limit = "{enabled: true, requestsPerSecond: 1000, global: true, outputTokensPerUnit: 40, inputTokensPerUnit: 200, unit: second}"
    async with _deployment(tmp_path, redis_server, limit) as port:
        url = f"http://{GATEWAY}:{port}{PATH}"
        body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            await asyncio.sleep(1.0)  # the warm-up request's tokens are two windows old
            await _window_start(offset=0.05)
            window = int(time.time())
            spent = []
            for _ in range(3):  # the mock answers 16 completion tokens: 3 x 16 > 40
                response = await _post(session, url, body)
                spent.append(response.status)
                await asyncio.sleep(0.05)  # the charge is sent when the stream is done
            assert spent == [200, 200, 200]
            refused = []
            while time.time() < window + 0.85:  # chunked requests (no Content-Length) too
                response = await (_post_chunked if len(refused) % 2 else _post)(session, url, body)
                refused.append(response.status)
                if response.status == 429:
                    assert response.headers.get("x-ratelimit-limit", "").startswith("40"), dict(response.headers)
                    assert response.headers.get("x-ratelimit-remaining") == "0"
                await asyncio.sleep(0.05)
            assert refused and set(refused) == {429}, refused
            # The next window: the spent tokens weigh less as it advances; admitted again.
            deadline = time.time() + 3
            while (response := await _post(session, url, body)).status != 200:
                assert time.time() < deadline, "still refused 3s after the budget's window"
                await asyncio.sleep(0.05)
            assert time.time() >= window + 1
            # The request's size is checked before it is sent: ~1000 bytes ≈ 250 tokens > 200.
            await asyncio.sleep(1.5)
            big = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "word " * 200}]}
            assert (await _post(session, url, big)).status == 429
            assert (await _post(session, url, body)).status == 200


async def _charged(redis: RedisProcess, kind: str) -> int:
    """Tokens of `kind` charged to ModelServer default/m, over every window Redis holds."""
    import redis.asyncio as aioredis

    from controller.ratelimit.windows import counter_key

    client = aioredis.Redis.from_url(redis.url)
    try:
        keys = await client.keys(counter_key("default/m", kind) + ":*")
        return sum([int(await client.get(k) or 0) for k in keys])
    finally:
        await client.aclose()


async def _stream(session: aiohttp.ClientSession, url: str, body: dict,
                  headers: dict[str, str] | None = None) -> tuple[list[dict], float, float]:
    """The JSON events of an SSE answer, the time to the first one and to the end."""
    started = time.monotonic()
    first = 0.0
    events: list[dict] = []
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200 and response.headers["content-type"] == "text/event-stream"
        async for line in response.content:
            text = line.decode().strip()
            if text.startswith("data: {"):
                first = first or time.monotonic() - started
                events.append(json.loads(text[len("data: "):]))
    return events, first, time.monotonic() - started


async def _until_charged(redis: RedisProcess, kind: str, at_least: int) -> int:
    deadline = time.monotonic() + 3
    while (charged := await _charged(redis, kind)) < at_least and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return charged


async def test_streamed_answers_are_charged_from_their_final_usage(tmp_path: Path,
                                                                   redis_server: RedisProcess) -> None:
    """Issue #17: a streamed answer's tokens count (its final usage chunk, read by Envoy as
    the stream passes, without holding it back); a stream without usage is charged an
    estimate, so leaving `include_usage` out is no way around a budget."""
    limit = "{enabled: true, requestsPerSecond: 1000, global: true, outputTokensPerUnit: 100000, inputTokensPerUnit: 100000, unit: hour}"
    async with _deployment(tmp_path, redis_server, limit) as port:
        url = f"http://{GATEWAY}:{port}{PATH}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            output, prompt = await _until_charged(redis_server, "output_tokens", 16), await _charged(redis_server, "input_tokens")
            body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 7,
                    "stream": True, "stream_options": {"include_usage": True}}
            events, first, total = await _stream(session, url, body, {"x-mock-chunk-delay-ms": "150"})
            assert events[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}
            assert first < 0.5 and total > 1.0, (first, total)  # chunks pass as they come: nothing is buffered
            assert await _until_charged(redis_server, "output_tokens", output + 7) == output + 7
            assert await _charged(redis_server, "input_tokens") == prompt + 2
            # Without include_usage: one token per JSON event (role, 5 tokens, finish), and
            # the request's bytes / 4 as its prompt.
            quiet = {**body, "max_tokens": 5, "stream_options": {"include_usage": False}}
            events, _, _ = await _stream(session, url, quiet)
            assert len(events) == 7 and all("usage" not in e for e in events)
            assert await _until_charged(redis_server, "output_tokens", output + 14) == output + 14
            assert await _charged(redis_server, "input_tokens") == prompt + 2 + -(-len(json.dumps(quiet)) // 4)


async def _window_start(offset: float) -> None:
    now = time.time()
    await asyncio.sleep(int(now) + 1 - now + offset)


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
async def test_redis_killed_then_back(tmp_path: Path, redis_server: RedisProcess, fail_open: bool) -> None:
    n = 5
    async with _deployment(tmp_path, redis_server, f"{{enabled: true, requestsPerSecond: {n}, global: true}}",
                           fail_open=fail_open) as port:
        url = f"http://{GATEWAY}:{port}{PATH}"
        before = _count_failures(fail_open)
        errors_before = REDIS_ERRORS._value.get()
        limited = [status for _, status in await _load(url, 1.0, 4)]
        assert limited.count(200) <= 2 * n + 1 and 429 in limited

        redis_server.kill()
        started = time.monotonic()
        down = await _load(url, 1.5, 4)
        statuses = {status for _, status in down}
        assert statuses == ({200} if fail_open else {429}), statuses
        assert len(down) > 4 * 1.5 / 0.5  # no request waited long: answered by the mode
        assert time.monotonic() - started < 5
        assert _count_failures(fail_open) > before
        assert REDIS_ERRORS._value.get() > errors_before

        redis_server.start()  # same port: the service reconnects and reloads its script
        await asyncio.sleep(1.0)
        back = [status for _, status in await _load(url, 1.5, 4)]
        assert 200 in back and 429 in back, back
        assert back.count(200) <= 3 * n  # the 1.5 s touch at most 3 windows of n


def _count_failures(fail_open: bool) -> float:
    return DECISIONS.labels("failure_allowed" if fail_open else "failure_denied")._value.get()
