"""Open-loop inference workload client, run as its own process (aiohttp), for
`bench.inference_routing`.

    python bench/_inference_client.py SPEC_JSON
SPEC: {"url", "seed", "duration_s", "rate", "burst_every_s", "burst_s", "burst_factor",
"long_share", "short_words": [lo, hi], "long_words": [lo, hi], "prefix_groups",
"prefix_words", "max_tokens", "headers", "warmup_s"}.

Arrivals are a Poisson process at `rate` per second, `burst_factor` times that during
the first `burst_s` of every `burst_every_s` (bursts). Each request is a streamed chat
completion whose prompt is one of `prefix_groups` shared system prompts of `prefix_words`
words followed by a user part of `short_words` words, or with probability `long_share`
of `long_words` (long prompts). The schedule comes from `seed` alone, so every policy of
one run sees the same requests at the same offsets. Requests are sent on time whatever
the answers do (open loop: a slow policy cannot slow the offered load down).

Prints one JSON object: per request (after `warmup_s`) the latency and the time to first
token (first content chunk) in milliseconds, the prompt kind, the replica (`x-replica`)
and the status.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

import aiohttp


def schedule(spec: dict[str, Any]) -> list[tuple[float, dict[str, Any], str]]:
    """(offset in seconds, request body, kind) for the whole run, from the seed."""
    rng = random.Random(spec["seed"])
    words = [f"w{i}" for i in range(5000)]
    prefixes = [" ".join(rng.choice(words) for _ in range(spec["prefix_words"])) for _ in range(spec["prefix_groups"])]
    out: list[tuple[float, dict[str, Any], str]] = []
    t = 0.0
    while True:
        in_burst = spec["burst_every_s"] > 0 and (t % spec["burst_every_s"]) < spec["burst_s"]
        rate = spec["rate"] * (spec["burst_factor"] if in_burst else 1.0)
        t += rng.expovariate(rate)
        if t >= spec["duration_s"]:
            return out
        long = rng.random() < spec["long_share"]
        lo, hi = spec["long_words"] if long else spec["short_words"]
        user = " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))
        group = rng.randrange(spec["prefix_groups"])
        body = {"model": spec.get("model", "m"), "stream": True, "max_tokens": spec["max_tokens"],
                "messages": [{"role": "system", "content": prefixes[group]}, {"role": "user", "content": user}]}
        out.append((t, body, "long" if long else "short"))


async def one(session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
              ) -> dict[str, Any]:
    started = time.perf_counter()
    first: float | None = None
    try:
        async with session.post(url, json=body, headers=headers) as response:
            replica = response.headers.get("x-replica", "")
            async for line in response.content:
                token = line.startswith(b"data: {") and b'"content"' in line and b'"content": ""' not in line
                if first is None and token:
                    first = time.perf_counter()
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        return {"status": 0, "error": type(err).__name__, "latency_ms": (time.perf_counter() - started) * 1000}
    done = time.perf_counter()
    return {"status": status, "replica": replica, "latency_ms": round((done - started) * 1000, 2),
            "ttft_ms": round(((first or done) - started) * 1000, 2)}


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    plan = schedule(spec)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.get("timeout_s", 120))
    results: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []

        async def timed(offset: float, body: dict[str, Any], kind: str) -> None:
            row = await one(session, spec["url"], body, spec.get("headers", {}))
            if offset >= spec.get("warmup_s", 0):
                results.append({**row, "kind": kind, "offset_s": round(offset, 3)})

        for offset, body, kind in plan:
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed(offset, body, kind)))
        await asyncio.gather(*tasks)
        late = loop.time() - start - spec["duration_s"]
    return {"requests": results, "offered": len(plan), "drain_s": round(late, 2)}


def main() -> None:
    spec = json.loads(sys.argv[1])
    cpus = sorted(os.sched_getaffinity(0))
    if spec.get("pin_last_cpu") and len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[-1]})
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
