"""What the canary end-to-end tests share: a stable and a canary ModelServer behind one
ModelRoute with a short analysis interval, steady load through the real Envoy, and a
record of every live split the runner applied."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from modelroute.embedded import Embedded
from routing_engine.api.resources import ObjectKey
from tests.e2e.harness import Client, dest, infer, infer_key, route, server, write_manifests
from tests.support import free_port

ROUTE = ObjectKey("ModelRoute", "default", "chat")
PATH = "/v1/chat/completions"


def canary_manifests(directory: Path, *, port: int, interval: str = "2s", step: int = 30, max_failures: int = 2,
                     min_requests: int = 10, sticky_header: str | None = None,
                     split: tuple[int, int] = (90, 10), canary_name: str = "v2", fallback: bool = False) -> None:
    canary: dict[str, Any] = {"enabled": True, "trafficSplit": {"stable": split[0], "canary": split[1]},
                              "analysis": {"threshold": 95, "interval": interval, "stepWeight": step,
                                           "maxFailures": max_failures, "minRequests": min_requests}}
    if sticky_header:
        canary["stickyHeader"] = sticky_header
    write_manifests(directory / "canary.yaml", [
        infer("v1"), infer(canary_name),
        server("v1", port=port, path="/v1/models/v1"),
        server(canary_name, port=port, path="/v1/models/v2"),
        route("chat", path="/v1/chat", routes=[dest("v1"), dest(canary_name)], canary=canary,
              **({"fallback": {"modelServerRef": {"name": "fb"}}} if fallback else {})),
        *([infer("fb"), server("fb", port=port, path="/v1/models/fb")] if fallback else []),
    ])


async def set_fail_rate(app: Embedded, infer_name: str, rate: float) -> None:
    (endpoint,) = app.replicas.endpoints()[infer_key(infer_name)]
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.post(f"http://127.0.0.1:{endpoint.port}/_mock/behaviour", json={"fail_rate": rate}) as r:
            assert r.status == 200, await r.text()


@dataclass
class Load:
    """Replies of a steady stream of requests: (monotonic time, status, ModelInfer)."""

    replies: list[tuple[float, int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def steady_load(port: int, *, concurrency: int = 6, headers: dict[str, str] | None = None) -> AsyncIterator[Load]:
    load = Load()
    client = Client(port)
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            try:
                reply = await client.post(PATH, json={"model": "llama", "messages": []}, headers=headers, timeout=5)
                load.replies.append((time.monotonic(), reply.status, reply.served_by))
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                load.errors.append(repr(err))
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        yield load
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


@dataclass
class Splits:
    """Every distinct (stable, canary) split of ROUTE the runner held, in order."""

    seen: list[tuple[int, int]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def watch_splits(app: Embedded) -> AsyncIterator[Splits]:
    splits = Splits()

    def look() -> None:
        state = app.canary.runner.state_of(ROUTE)
        if state is not None and (not splits.seen or splits.seen[-1] != state.weights):
            splits.seen.append(state.weights)

    async def watch() -> None:
        while True:
            look()
            await asyncio.sleep(0.02)

    task = asyncio.create_task(watch())
    try:
        yield splits
        look()  # the last split too: the caller may have seen it before the next poll
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        look()  # the split that ended the wait (a caller's poll may have seen it first)


async def wait_phase(app: Embedded, phase: str, *, timeout: float) -> float:
    started = time.monotonic()
    while True:
        state = app.canary.runner.state_of(ROUTE)
        if state is not None and state.phase == phase:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"canary not {phase} after {timeout}s: {state}")
        await asyncio.sleep(0.05)


def new_port() -> int:
    return free_port()
