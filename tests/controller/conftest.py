"""Every controller test must leave no child process and no asyncio task behind, and no
background task may crash or end unnoticed (unless the test says it expects that)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import logging

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "task_errors_expected: the test makes a guarded background task fail on purpose")


@pytest.fixture(autouse=True)
def no_background_task_errors(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    if request.node.get_closest_marker("task_errors_expected"):
        return
    bad = [r.getMessage() for r in caplog.get_records("call") + caplog.get_records("teardown")
           if r.name == "kit.tasks" and r.levelno >= logging.ERROR]
    assert not bad, f"background task failures: {bad}"


def _children() -> set[int]:
    me = str(os.getpid())
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ... ; comm may contain spaces, so split after the ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[1] == me and fields[0] != "Z":
            found.add(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    before = _children()
    yield
    leaked = _children() - before
    assert not leaked, f"test leaked child processes: {sorted(leaked)}"


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    yield
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert not leaked, f"test leaked asyncio tasks: {[t.get_name() for t in leaked]}"
