"""Compile benchmark (issue #3, #9): full compile of N ModelRoutes + N ModelServers, peak
memory, and an incremental compile after editing one route.

    .venv/bin/python -m bench.compile [--sizes 100 1000 10000] [--repeat 3]

Writes bench/results/compile.json. Full compile starts from a fresh Translator (nothing
cached); incremental reuses the Translator of the previous compile, as the control loop
does, and edits one route's weights.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from pathlib import Path

from bench import worlds
from routing_engine.engine import compile as compile_world
from routing_engine.translate.translator import Translator
from routing_engine.world import Target

RESULTS = Path(__file__).resolve().parent / "results"


def measure(n: int, repeat: int) -> dict:
    objs = worlds.objects(n)
    base = worlds.world(n, objs)
    target = Target()
    full, incremental, resolve_only = [], [], []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        translator = Translator()
        compiled = compile_world(base, target, translator=translator)
        full.append(time.perf_counter() - started)
        for k in range(3):
            changed = worlds.edited(n, objs, which=n // 2, weight=50 + k)
            started = time.perf_counter()
            compile_world(changed, target, translator=translator)
            incremental.append(time.perf_counter() - started)
    tracemalloc.start()
    compile_world(base, target, translator=Translator())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    resources = sum(len(v) for v in compiled.resources.values())
    routes = sum(len(listener.routes) for listener in compiled.gateway.listeners) if compiled.gateway else 0
    return {"model_routes": n, "model_servers": n, "envoy_routes": routes, "resources": resources,
            "full_compile_s": {"median": statistics.median(full), "min": min(full), "max": max(full)},
            "incremental_compile_s": {"median": statistics.median(incremental), "min": min(incremental),
                                      "max": max(incremental)},
            "peak_traced_mb": peak / 2**20}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = [measure(n, args.repeat) for n in args.sizes]
    print(f"{'routes+servers':>15} {'envoy routes':>12} {'full compile':>13} {'incremental':>12} {'peak MB':>8}")
    for r in rows:
        print(f"{r['model_routes']:>15,} {r['envoy_routes']:>12,} {r['full_compile_s']['median']*1000:>10.0f} ms"
              f" {r['incremental_compile_s']['median']*1000:>9.1f} ms {r['peak_traced_mb']:>8.0f}")
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": "compile", "rows": rows}
    (RESULTS / "compile.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
