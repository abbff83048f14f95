"""Compile benchmark (issue #3, #9): N ModelRoutes + N ModelServers — resolve alone, full
compile, incremental compile after a one-route edit, and peak memory.

    .venv/bin/python -m bench.compile [--sizes 100 1000 10000] [--repeat 3] [--entries 10000]

Writes bench/results/compile.json. Each number is measured two ways:
- `loop`: what the control loop does (`modelroute.control_loop.compile_paused`): cyclic
  GC paused during the compile, and the heap frozen once after the first compile;
- `gc_on`: the plain call with the collector running as it likes.
`--entries N` adds one row: a single ModelRoute with N header entries on one path (full
compile as the control loop runs it; shadowing compares entries of one path there).
Full compile starts from a fresh `Compiler` (nothing cached); incremental reuses the
`Compiler` of the previous compile, as the control loop does per node group, after
editing one more route's weights (objects tuple copied with one object replaced,
endpoints mapping kept: what the providers and the loop hand over); `server_add` then
adds one more ModelServer each time (with its ModelInfer and endpoints, on the ports in
turn: a new model coming up). Wall and CPU (process) time are both reported: the
machine is shared, and wall time carries others' load.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import worlds
from bench._common import machine
from kit.collector import gc_paused
from modelroute.control_loop import compile_paused
from routing_engine.engine import Compiler
from routing_engine.incremental import Resolver
from routing_engine.world import Target

RESULTS = Path(__file__).resolve().parent / "results"
EDITS = 5
ADDS = 4


def _timed(call: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def _stats(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls, cpus = [w for w, _ in samples], [c for _, c in samples]
    return {"median": statistics.median(walls), "min": min(walls), "max": max(walls),
            "cpu_median": statistics.median(cpus)}


def measure(n: int, repeat: int) -> dict[str, Any]:
    objs = worlds.objects(n)
    base = worlds.world(n, objs)
    target = Target()
    edits = []
    current = list(objs)
    for k in range(EDITS):  # each compile sees exactly one more route edited than the last
        edited = worlds.edited(n, current, which=(n // 2 + 7 * k) % n, weight=50 + k, base=base)
        current = list(edited.objects)
        edits.append(edited)
    adds = [worlds.with_servers_added(n, edits[-1], k) for k in range(1, ADDS + 1)]
    samples: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, sample: tuple[float, float]) -> None:
        samples.setdefault(name, []).append(sample)

    for _ in range(repeat):
        # gc_on: the collector runs as it likes, nothing frozen.
        gc.unfreeze()
        gc.collect()
        add("resolve_gc_on", _timed(lambda: Resolver().resolve(base, target)))
        compiler = Compiler()
        add("full_gc_on", _timed(lambda: compiler.compile(base, target)))
        for world in edits:
            add("incremental_gc_on", _timed(lambda: compiler.compile(world, target)))
        # loop: what modelroute.control_loop does.
        del compiler
        gc.unfreeze()
        gc.collect()
        with gc_paused():
            add("resolve_loop", _timed(lambda: Resolver().resolve(base, target)))
        compiler = Compiler()
        add("full_loop", _timed(lambda: compile_paused(compiler, base, target, freeze=True)))
        for world in edits:
            add("incremental_loop", _timed(lambda: compile_paused(compiler, world, target)))
        for world in adds:
            add("server_add_loop", _timed(lambda: compile_paused(compiler, world, target)))
        del compiler
    gc.unfreeze()
    gc.collect()
    compiled = Compiler().compile(base, target)
    tracemalloc.start()
    Compiler().compile(base, target)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    resources = sum(len(v) for v in compiled.resources.values())
    routes = sum(len(listener.routes) for listener in compiled.gateway.listeners) if compiled.gateway else 0
    row: dict[str, Any] = {"model_routes": n, "model_servers": n, "envoy_routes": routes, "resources": resources,
                           "peak_traced_mb": peak / 2**20}
    for name, found in samples.items():
        row[f"{name}_s"] = _stats(found)
    # the names earlier results used: what the control loop does
    row["full_compile_s"] = row["full_loop_s"]
    row["incremental_compile_s"] = row["incremental_loop_s"]
    return row


def measure_big_route(entries: int, repeat: int) -> dict[str, Any]:
    world = worlds.big_route(entries)
    samples = []
    for _ in range(repeat):
        gc.collect()
        compiler = Compiler()
        samples.append(_timed(lambda: compile_paused(compiler, world, Target())))
        del compiler
    return {"entries": entries, "full_loop_s": _stats(samples)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--entries", type=int, nargs="*", default=[10000],
                        help="also compile one ModelRoute with this many header entries")
    args = parser.parse_args(argv)
    rows = [measure(n, args.repeat) for n in args.sizes]
    big = [measure_big_route(n, args.repeat) for n in args.entries]
    columns = ("resolve", "full", "incremental")
    print("median wall ms (cpu ms); loop = GC paused as in the control loop, gc_on = collector running")
    print(f"{'routes+servers':>15} {'envoy routes':>12} " + " ".join(f"{c + ' ' + m:>22}" for c in columns
                                                                     for m in ("loop", "gc_on")) + f" {'peak MB':>8}")
    for r in rows:
        cells = []
        for c in columns:
            for m in ("loop", "gc_on"):
                s = r[f"{c}_{m}_s"]
                cells.append(f"{s['median'] * 1000:>10.1f} ({s['cpu_median'] * 1000:>8.1f})")
        print(f"{r['model_routes']:>15,} {r['envoy_routes']:>12,} " + " ".join(f"{c:>22}" for c in cells)
              + f" {r['peak_traced_mb']:>8.0f}")
    for r in rows:
        s = r["server_add_loop_s"]
        print(f"{r['model_routes']:,}: add a ModelServer (loop) {s['median'] * 1000:.1f} ms "
              f"({s['cpu_median'] * 1000:.1f} ms cpu)")
    for b in big:
        s = b["full_loop_s"]
        print(f"one ModelRoute with {b['entries']:,} header entries: full {s['median'] * 1000:.1f} ms "
              f"({s['cpu_median'] * 1000:.1f} ms cpu)")
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": "compile", "machine": machine(), "command": "python -m bench.compile " + " ".join(
        argv if argv is not None else sys.argv[1:]), "rows": rows, "big_route": big}
    (RESULTS / "compile.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
