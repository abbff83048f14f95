"""The sliding-window Lua script against a real Redis (no Envoy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from controller.ratelimit.windows import Charge, SlidingWindows, counter_key
from tests.ratelimit.conftest import RedisProcess

MINUTE = 60_000


@pytest.fixture
async def windows(redis_server: RedisProcess) -> AsyncIterator[SlidingWindows]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield SlidingWindows(client)
    finally:
        await client.aclose()


async def test_take_admits_the_limit_then_refuses(windows: SlidingWindows) -> None:
    key = counter_key("default/a", "requests")
    results = [(await windows.decide([Charge(key, MINUTE, 5, 1, "take")]))[0] for _ in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert [r.remaining for r in results] == [4, 3, 2, 1, 0, 0, 0]
    assert all(0 < r.reset_ms <= MINUTE for r in results)
    # Refused requests were not counted; the key expires after two windows.
    idx_keys = [k async for k in windows.client.scan_iter(match=key + ":*")]
    assert len(idx_keys) == 1
    assert int(await windows.client.get(idx_keys[0])) == 5
    assert 0 < await windows.client.pttl(idx_keys[0]) <= 2 * MINUTE + 1000


async def test_a_request_refused_by_one_counter_spends_none(windows: SlidingWindows) -> None:
    requests = counter_key("default/a", "requests")
    tokens = counter_key("default/a", "input_tokens")
    refused = await windows.decide([Charge(requests, MINUTE, 10, 1, "take"), Charge(tokens, MINUTE, 5, 6, "peek")])
    assert [o.allowed for o in refused] == [True, False]  # the request slot itself fitted
    admitted = await windows.decide([Charge(requests, MINUTE, 10, 1, "take"), Charge(tokens, MINUTE, 5, 5, "peek")])
    assert [o.allowed for o in admitted] == [True, True]
    assert admitted[0].remaining == 9  # only the admitted request was counted
    assert admitted[1].remaining == 5  # a peek counts nothing


async def test_charges_always_count_and_exhaust_the_budget(windows: SlidingWindows) -> None:
    tokens = counter_key("default/a", "output_tokens")
    charged = await windows.decide([Charge(tokens, MINUTE, 100, 70, "charge")])
    assert charged[0].allowed and charged[0].remaining == 30
    over = await windows.decide([Charge(tokens, MINUTE, 100, 50, "charge")])  # past the limit: still counted
    assert over[0].allowed and over[0].remaining == 0
    assert not (await windows.decide([Charge(tokens, MINUTE, 100, 1, "peek")]))[0].allowed


async def test_the_previous_window_weighs_less_as_the_current_one_advances(windows: SlidingWindows) -> None:
    """Fill a 2 s window, then watch the next one: at its start nearly nothing fits
    (the full previous window still counts), halfway about half the limit fits."""
    key = counter_key("default/a", "requests")
    window, limit = 2000, 20
    await _wait_window_start(windows, window, offset_ms=100)
    for _ in range(limit):
        await windows.decide([Charge(key, window, limit, 1, "take")])
    await _wait_window_start(windows, window, offset_ms=0)
    early = [(await windows.decide([Charge(key, window, limit, 1, "take")]))[0].allowed for _ in range(limit)]
    assert sum(early) <= 2
    await asyncio.sleep(window / 2000)  # to the middle of the window
    middle = [(await windows.decide([Charge(key, window, limit, 1, "take")]))[0].allowed for _ in range(limit)]
    assert limit // 2 - 3 <= sum(middle) + sum(early) <= limit // 2 + 3


async def _wait_window_start(windows: SlidingWindows, window_ms: int, *, offset_ms: int) -> None:
    seconds, micros = await windows.client.time()
    now_ms = seconds * 1000 + micros // 1000
    await asyncio.sleep((window_ms - now_ms % window_ms + offset_ms) / 1000)
