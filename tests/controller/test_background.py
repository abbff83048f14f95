"""Guarded tasks: crashes and unexpected ends are logged with the task's name."""

from __future__ import annotations

import asyncio

import pytest

from kit.tasks import cancel_and_wait, spawn
from tests.controller.fakes import settle


@pytest.mark.task_errors_expected
async def test_crash_is_logged_with_task_name(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise ValueError("bad thing")

    spawn(boom(), name="watcher/x")
    await settle()
    assert "background task crashed: task=watcher/x" in caplog.text
    assert "bad thing" in caplog.text


@pytest.mark.task_errors_expected
async def test_endless_task_returning_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def done() -> None:
        return None

    spawn(done(), name="loop/y")
    await settle()
    assert "ended unexpectedly: task=loop/y" in caplog.text


async def test_finite_task_and_cancellation_are_quiet(caplog: pytest.LogCaptureFixture) -> None:
    async def done() -> None:
        return None

    spawn(done(), name="once", endless=False)
    forever = spawn(asyncio.Event().wait(), name="forever")
    await settle()
    await cancel_and_wait(forever)
    assert forever.cancelled()
    assert "background task" not in caplog.text


def test_children_die_with_their_parent() -> None:
    import os
    import subprocess
    import sys
    import time

    from tests.support import REPO, stop_process

    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "from controller.local.processes import child_preexec\n"
         "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=child_preexec())\n"
         "print(child.pid, flush=True)\n"
         "time.sleep(60)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    child: int | None = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        state = "?"
        while time.monotonic() < deadline:
            try:
                state = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                state = "gone"
            if state in ("gone", "Z"):
                break
            time.sleep(0.05)
        assert state in ("gone", "Z"), f"orphaned child {child} still running (state {state})"
    finally:
        stop_process(parent)
        if parent.stdout:
            parent.stdout.close()
        if child is not None:
            try:
                os.kill(child, 9)  # only if the assertion failed: never leave the orphan running
            except ProcessLookupError:
                pass
