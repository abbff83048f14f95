"""Leading/trailing-edge debounce with a cap (SPEC 5).

An isolated change after a quiet period goes out at once (leading edge). Changes that
follow within `window` are coalesced: only the newest is published, once `window` passes
without another change (trailing edge) or `max_delay` after the first coalesced change,
whichever comes first, so a steady stream of edits can't postpone a push forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("modelroute.xds")


class Debouncer(Generic[T]):
    def __init__(self, publish: Callable[[T], None], *, window: float, max_delay: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window < 0 or max_delay < window:
            raise ValueError(f"debounce: need 0 <= window ({window}) <= max_delay ({max_delay})")
        self._publish = publish
        self._window = window
        self._max_delay = max_delay
        self._clock = clock
        self._last_publish: float | None = None
        self._pending: T | None = None
        self._has_pending = False
        self._first_pending = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, value: T) -> None:
        """Publish `value` now if quiet, else coalesce it. Call on the event loop thread."""
        now = self._clock()
        quiet = self._last_publish is None or now - self._last_publish >= self._window
        if self._window == 0 or (quiet and self._timer is None):
            self._emit(value, now)
            return
        if not self._has_pending:
            self._first_pending = now
        self._pending, self._has_pending = value, True
        if self._timer is not None:
            self._timer.cancel()
        due = min(now + self._window, self._first_pending + self._max_delay)
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - now), self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._has_pending:
            value, self._pending, self._has_pending = self._pending, None, False
            self._emit(value, self._clock())  # type: ignore[arg-type]

    def _emit(self, value: T, now: float) -> None:
        self._last_publish = now
        try:
            self._publish(value)
        except Exception:  # the timer callback has no caller to raise to
            log.exception("xds snapshot publish failed")

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
