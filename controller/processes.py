"""Stopping the child processes we start (Envoy, model replicas): by PID, SIGTERM first so
they exit cleanly, SIGKILL after a grace period, always reaped."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

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
