"""The child processes we start (Envoy, model replicas, redis-server): stopped by PID,
SIGTERM first so they exit cleanly, SIGKILL after a grace period, always reaped; and for
the unclean shutdown (the control plane SIGKILLed or crashing hard) `child_preexec` asks
Linux to SIGTERM them when their parent dies, so no orphan keeps a port bound."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)


async def terminate(proc: asyncio.subprocess.Process, *, grace: float, label: str) -> int | None:
    """Stop `proc` (a no-op when it already exited); returns its exit code."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except asyncio.TimeoutError:
            log.warning("process ignored SIGTERM, killing: process=%s pid=%s", label, proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    except ProcessLookupError:
        await proc.wait()
    return proc.returncode


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """`preexec_fn` for child processes: SIGTERM the child when its parent dies (Linux;
    elsewhere a no-op, and the clean shutdown path still stops every child).

    With `parent` (the spawning process's PID, bound with functools.partial) the child
    also closes the race where the parent dies between fork and prctl: the death signal
    would then never come, so the child ends itself."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if parent is not None and os.getppid() != parent:
            os._exit(1)


def child_preexec() -> Callable[[], None]:
    """The `preexec_fn` every child we start gets: dies with this process."""
    return functools.partial(die_with_parent, os.getpid())
