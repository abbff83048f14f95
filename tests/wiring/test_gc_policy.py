"""The collector policy of the control loop (`compile_paused`): the heap alive after the
first compile is frozen without a collection first, which loses nothing only because a
compile makes no cyclic garbage. Checked on every golden case (every feature, the
third-party plugins of the cases included) and a bench world, full and incremental;
and the loop freezes once, at the end of its first compile, with the collector off."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest

from bench import worlds
from kit.tasks import cancel_and_wait, spawn
from modelroute import control_loop
from modelroute.control_loop import ControlLoop
from modelroute.targets import Placement
from routing_engine.api.loader import load_manifests
from routing_engine.api.resources import ModelRoute
from routing_engine.engine import Compiler
from routing_engine.world import Target
from tests.golden import harness
from tests.wiring.test_control_loop import QUICKSTART, _weights

CASES = harness.cases()


def _cyclic_garbage_of(call: Callable[[], Any]) -> int:
    """How many objects `call` left unreachable but alive (in reference cycles only the
    collector frees); its result is kept alive while counting."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        result = call()
        found = gc.collect()
        del result
    finally:
        if was_enabled:
            gc.enable()
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_compile_of_every_golden_case_makes_no_cyclic_garbage(case: harness.Case) -> None:
    world, target, _ = harness.load_world(case)
    compiler = Compiler(harness.load_plugins(case))
    assert _cyclic_garbage_of(lambda: compiler.compile(world, target)) == 0
    assert _cyclic_garbage_of(lambda: compiler.compile(world, target)) == 0  # everything reused


def test_full_and_incremental_compiles_of_a_bench_world_make_no_cyclic_garbage() -> None:
    n = 200
    objects = worlds.objects(n)
    base = worlds.world(n, objects)
    edited = worlds.edited(n, objects, which=7, weight=30, base=base)
    added = worlds.with_servers_added(n, edited, 2)
    compiler = Compiler()
    for world in (base, edited, added):
        assert _cyclic_garbage_of(lambda: compiler.compile(world, Target())) == 0


def test_the_garbage_count_sees_a_cycle() -> None:
    """The check above can fail: a call that leaves one cycle behind is counted."""
    def leave_a_cycle() -> None:
        a: list[Any] = []
        a.append(a)

    assert _cyclic_garbage_of(leave_a_cycle) == 1


async def test_the_loop_freezes_the_heap_once_at_the_end_of_its_first_compile(monkeypatch) -> None:
    freezes: list[bool] = []  # whether the collector was on at each freeze
    monkeypatch.setattr(control_loop.gc, "freeze", lambda: freezes.append(gc.isenabled()))
    loop = ControlLoop(placement=Placement(listen_address="127.0.0.1"))
    task = spawn(loop.debouncer.run(), name="test-loop")
    try:
        objects, errors = load_manifests([QUICKSTART])
        assert errors == []
        loop.set_objects(objects)
        await loop.wait_synced(timeout=10)
        assert freezes == [False]
        route = next(o for o in objects if isinstance(o, ModelRoute))
        loop.set_objects([_weights(route, 30, 70) if o is route else o for o in objects])
        await loop.wait_synced(timeout=10)
        assert loop.generation >= 2
        assert freezes == [False]
    finally:
        await cancel_and_wait(task)
        await loop.close()
