"""Guarded background work: a task that crashes, or a never-ending one that returns, is
logged with its name, never lost.

asyncio only reports an exception of a forgotten task when the task is garbage-collected
(if ever), so a dead watcher or supervisor would otherwise go unnoticed while the system
silently stops reacting. Every long-lived task is started through `spawn`, which keeps
a strong reference and logs the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

# Strong references: the event loop keeps only weak ones, so an unreferenced task can be
# collected mid-flight.
_RUNNING: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], *, name: str, endless: bool = True) -> asyncio.Task[Any]:
    """Start `coro` as a task whose crash (or, when `endless`, whose return) is logged."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _RUNNING.add(task)
    task.add_done_callback(lambda t: _report(t, endless=endless))
    return task


def _report(task: asyncio.Task[Any], *, endless: bool) -> None:
    _RUNNING.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task crashed: task=%s error=%r", task.get_name(), exc,
                  exc_info=exc, extra={"task": task.get_name()})
    elif endless:
        log.error("background task ended unexpectedly: task=%s", task.get_name(),
                  extra={"task": task.get_name()})


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks and wait until they are really gone (no pending-task warnings)."""
    live = [t for t in tasks if t is not None and not t.done()]
    for t in live:
        t.cancel()
    if live:
        await asyncio.gather(*live, return_exceptions=True)
