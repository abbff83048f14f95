"""Debouncing of world changes before a push (SPEC 5).

Providers call `Debouncer.notify()` on every change; the debouncer calls `push()` (which
reads the latest world, so coalescing never loses a change). The policy:

- **leading edge** — a change after a quiet period (no change for `window` seconds) is
  pushed at once: an isolated edit is never delayed;
- **trailing edge** — changes that follow within `window` are coalesced into one push,
  `window` after the last of them;
- **cap** — a continuous burst postpones its push at most `max_delay` after its first
  coalesced change, so a steady stream of edits still reaches Envoy.

`BurstPolicy` is the pure decision (times in, deadline out), tested exhaustively with
plain numbers; `Debouncer` drives it on an injectable `Clock` so the driver is tested
with a fake clock too. Pushes never overlap: changes during a push are coalesced into
the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class BurstPolicy:
    """When to push, given when changes happened. Times are seconds on any clock."""

    def __init__(self, *, window: float, max_delay: float) -> None:
        if window < 0 or max_delay < window:
            raise ValueError(f"need 0 <= window <= max_delay (got window={window}, max_delay={max_delay})")
        self.window = window
        self.max_delay = max_delay
        self._last_change: float | None = None
        self._burst_start: float | None = None
        # When the pending push is due; None: nothing pending.
        self.deadline: float | None = None

    def change(self, now: float) -> None:
        quiet = self._last_change is None or now - self._last_change >= self.window
        self._last_change = now
        if self.deadline is None:
            if quiet:
                self._burst_start, self.deadline = now, now  # leading edge
                return
            self._burst_start = now
        assert self._burst_start is not None
        if self.deadline is not None and self.deadline <= now:
            return  # already due (e.g. a push is running): it will carry this change too
        self.deadline = min(now + self.window, self._burst_start + self.max_delay)

    def due(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def pushed(self) -> None:
        """Call when a push starts: it carries every change seen so far."""
        self.deadline = None
        self._burst_start = None


class Debouncer:
    """Drives `BurstPolicy`: `notify()` from anywhere on the loop, `run()` as a task."""

    def __init__(self, push: Callable[[], Awaitable[None]], *, window: float = 0.05,
                 max_delay: float = 0.5, clock: Clock | None = None, name: str = "world") -> None:
        self._push = push
        self._policy = BurstPolicy(window=window, max_delay=max_delay)
        self._clock = clock or MonotonicClock()
        self._wake = asyncio.Event()
        self._name = name
        self.pushes = 0

    def notify(self) -> None:
        self._policy.change(self._clock.now())
        self._wake.set()

    @property
    def pending(self) -> bool:
        return self._policy.deadline is not None

    async def run(self) -> None:
        """Push when due, forever. A failing push is logged and the loop goes on: the next
        change pushes the latest world again."""
        while True:
            now = self._clock.now()
            deadline = self._policy.deadline
            if deadline is not None and now >= deadline:
                self._policy.pushed()
                self.pushes += 1
                try:
                    await self._push()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("push failed: debouncer=%s", self._name, extra={"debouncer": self._name})
                continue
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
            else:
                await self._sleep_or_wake(deadline - now)

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (sleeper, waker):
                f.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
