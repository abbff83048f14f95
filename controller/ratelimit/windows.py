"""Shared rate-limit counters in Redis: sliding windows, one atomic Lua script per decision.

Algorithm: the sliding-window counter (two fixed windows, weighted). A limit of L per
window W keeps one counter per window index `floor(now / W)`; the count "in the last W"
is `previous * (W - elapsed) / W + current`. Chosen over a fixed window because a fixed
window admits up to 2L across a boundary (L at the end of one window, L at the start of
the next) — for a daily token budget that is a double spend around midnight — and over a
sliding log because token charges are sums (INCRBY of a usage count), not events, and two
integers per key stay O(1) in memory whatever the traffic. The cost is the assumption
that the previous window's traffic was spread evenly; under steady load the admitted
rate is L per W, smoothly.

One script call decides a whole request atomically: every `take` and `peek` is checked
first, then the `take`s are counted only if all fit (a request refused by its token
budget does not spend a request slot), and `charge`s (tokens reported after a
response) are always counted. Time comes from Redis (`TIME`), so every rate-limit
service instance shares one clock. Keys carry a hash tag (`{ns/name}`) and expire after
two windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

Mode = Literal["take", "peek", "charge"]

# ARGV per key: window_ms, limit, hits, mode. Returns per key {allowed, remaining, reset_ms}.
SLIDING_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local used, fits = {}, true
for i = 1, n do
  local window, limit = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i-2])
  local hits, mode = tonumber(ARGV[4*i-1]), ARGV[4*i]
  local idx = math.floor(now / window)
  local elapsed = now - idx * window
  local curr = tonumber(redis.call('GET', KEYS[i] .. ':' .. idx) or '0')
  local prev = tonumber(redis.call('GET', KEYS[i] .. ':' .. (idx - 1)) or '0')
  used[i] = prev * (window - elapsed) / window + curr
  if mode ~= 'charge' and used[i] + hits > limit then fits = false end
end
local out = {}
for i = 1, n do
  local window, limit = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i-2])
  local hits, mode = tonumber(ARGV[4*i-1]), ARGV[4*i]
  local idx = math.floor(now / window)
  local counted = mode == 'charge' or (mode == 'take' and fits)
  if counted and hits > 0 then
    local key = KEYS[i] .. ':' .. idx
    redis.call('INCRBY', key, hits)
    redis.call('PEXPIRE', key, 2 * window + 1000)
    used[i] = used[i] + hits
  end
  local allowed = 1
  if mode ~= 'charge' and not fits and (used[i] + (counted and 0 or hits) > limit) then allowed = 0 end
  local remaining = math.floor(limit - used[i])
  if remaining < 0 then remaining = 0 end
  out[i] = {allowed, remaining, window - (now - idx * window)}
end
return out
"""


@dataclass(frozen=True, slots=True)
class Charge:
    """One counter touched by a decision: `take` counts `hits` if everything fits,
    `peek` only checks that `hits` more would fit, `charge` counts unconditionally."""

    key: str
    window_ms: int
    limit: int
    hits: int
    mode: Mode


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    remaining: int
    reset_ms: int


def counter_key(server: str, kind: str) -> str:
    """`server` is `namespace/name`; the braces make it a Redis Cluster hash tag."""
    return f"modelroute:rl:{{{server}}}:{kind}"


class SlidingWindows:
    """Decides charges against Redis with one EVALSHA (redis-py reloads the script
    after a Redis restart empties the script cache)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._script = client.register_script(SLIDING_WINDOW_LUA)

    async def decide(self, charges: Sequence[Charge]) -> list[Outcome]:
        if not charges:
            return []
        args: list[int | str] = []
        for c in charges:
            args += [c.window_ms, c.limit, c.hits, c.mode]
        rows = await self._script(keys=[c.key for c in charges], args=args)
        return [Outcome(bool(int(a)), int(r), int(ms)) for a, r, ms in rows]
