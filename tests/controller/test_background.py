"""Guarded tasks: crashes and unexpected ends are logged with the task's name."""

from __future__ import annotations

import asyncio

import pytest

from controller.background import cancel_and_wait, spawn
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
