"""Debounce policy (pure, with numbers) and driver (on a fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from kit.tasks import cancel_and_wait
from kit.debounce import BurstPolicy, Debouncer
from tests.controller.fakes import FakeClock, settle


def test_isolated_change_is_due_immediately() -> None:
    p = BurstPolicy(window=0.1, max_delay=1.0)
    p.change(10.0)
    assert p.due(10.0)
    p.pushed()
    assert p.deadline is None


def test_change_after_quiet_period_is_leading_edge_again() -> None:
    p = BurstPolicy(window=0.1, max_delay=1.0)
    p.change(10.0)
    p.pushed()
    p.change(10.5)
    assert p.due(10.5)


def test_followers_are_coalesced_until_window_after_last() -> None:
    p = BurstPolicy(window=0.1, max_delay=1.0)
    p.change(10.0)
    p.pushed()
    p.change(10.05)
    assert not p.due(10.05)
    assert p.deadline == pytest.approx(10.15)
    p.change(10.12)
    assert p.deadline == pytest.approx(10.22)
    assert not p.due(10.2)
    assert p.due(10.22)


def test_burst_is_capped_by_max_delay() -> None:
    p = BurstPolicy(window=0.1, max_delay=0.3)
    p.change(0.0)
    p.pushed()
    t = 0.05
    while t < 1.0 and not p.due(t):
        p.change(t)
        t = round(t + 0.05, 10)
    # First coalesced change at 0.05, so the cap fires at 0.35 despite changes every 50 ms.
    assert p.deadline == pytest.approx(0.35)
    assert t == pytest.approx(0.35)


def test_change_while_due_keeps_it_due() -> None:
    p = BurstPolicy(window=0.1, max_delay=1.0)
    p.change(5.0)
    p.change(5.0)
    assert p.due(5.0)


def test_rejects_cap_below_window() -> None:
    with pytest.raises(ValueError, match="window"):
        BurstPolicy(window=1.0, max_delay=0.5)


async def test_driver_pushes_leading_then_coalesced_trailing() -> None:
    clock = FakeClock()
    pushed_at: list[float] = []

    async def push() -> None:
        pushed_at.append(clock.now())

    d = Debouncer(push, window=0.1, max_delay=1.0, clock=clock)
    task = asyncio.create_task(d.run())
    try:
        await settle()
        d.notify()
        await settle()
        assert pushed_at == [1000.0]  # no time passed: the isolated change went at once
        await clock.advance(0.02)
        d.notify()
        await clock.advance(0.02)
        d.notify()
        await settle()
        assert len(pushed_at) == 1
        await clock.advance(0.09)
        assert len(pushed_at) == 1  # 0.09 after the last change: still inside the window
        await clock.advance(0.02)
        assert pushed_at[1:] == [pytest.approx(1000.15)]
        assert d.pushes == 2 and not d.pending
    finally:
        await cancel_and_wait(task)


async def test_driver_survives_failing_push(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    calls = 0

    async def push() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("compile exploded")

    d = Debouncer(push, window=0.1, max_delay=1.0, clock=clock, name="test")
    task = asyncio.create_task(d.run())
    try:
        d.notify()
        await settle()
        await clock.advance(1.0)
        d.notify()
        await settle()
        assert calls == 2
        assert "push failed: debouncer=test" in caplog.text
    finally:
        await cancel_and_wait(task)


async def test_changes_during_a_slow_push_are_pushed_after_it() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    calls = 0

    async def push() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()

    d = Debouncer(push, window=0.1, max_delay=1.0, clock=clock)
    task = asyncio.create_task(d.run())
    try:
        d.notify()
        await settle()
        await clock.advance(0.5)
        d.notify()  # quiet since the last change: due at once, but a push is running
        await settle()
        assert calls == 1
        release.set()
        await settle()
        assert calls == 2
    finally:
        await cancel_and_wait(task)
