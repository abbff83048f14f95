"""Test doubles for timing logic: a fake clock that only moves when the test says so."""

from __future__ import annotations

import asyncio


class FakeClock:
    """`kit.debounce.Clock` whose time moves only through `advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time on, wake the sleepers that are due, and let the loop settle."""
        self._now += seconds
        for when, fut in list(self._sleepers):
            if when <= self._now and not fut.done():
                fut.set_result(None)
        self._sleepers = [(w, f) for w, f in self._sleepers if not f.done()]
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every ready callback run (no wall-clock waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
