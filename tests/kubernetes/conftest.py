"""Fixtures: a fake API server on 127.0.0.1 and a client connected to it, both torn down
with the test; a guard that fails any test leaving asyncio tasks behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.kubernetes.client import KubeClient
from tests.kubernetes.fakeapi import FakeKubeApi


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeKubeApi]:
    server = FakeKubeApi()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def api(fake_api: FakeKubeApi) -> AsyncIterator[KubeClient]:
    async with KubeClient(fake_api.url, request_timeout=5.0) as client:
        yield client


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert not leaked, f"test leaked tasks: {leaked}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The real-cluster suite (`@pytest.mark.kubernetes`) runs when KUBECONFIG is set and
    is deselected (reported as such, not skipped) otherwise."""
    if os.environ.get("KUBECONFIG"):
        return
    here = Path(__file__).parent
    deselected = [i for i in items if i.get_closest_marker("kubernetes") and here in Path(str(i.path)).parents]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if i not in deselected]
