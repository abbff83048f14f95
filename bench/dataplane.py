"""Data plane: what Envoy with the compiled config adds to a request, and how exact an
80/20 split is (issue #9).

World: N ModelRoutes (`/v1/models/r{i}`) over two mock-engine backends (blue, green),
plus `--servers S - 2` more ModelServers on the same port (each its own path, all on the
blue engine: the issue-#15 world has 2,500 servers per port, and per-server work in the
filter chain would show here), compiled by routing_engine and loaded into Envoy as a
static bootstrap (the same listeners, routes and clusters xDS would push; no control
plane in the loop). Envoy (`--concurrency 1`) and the backends are pinned to the first
CPU, the load generator (bench/_loadgen.py: closed loop, one keep-alive connection,
stdlib client) to the last.
- latency: per round, WARMUP + COUNT sequential requests straight to the blue backend,
  then the same through a bare Envoy (one listener, the router, one route to blue:
  `tests.support.static_proxy`), then through the compiled Envoy to a route in the
  middle of the table (blue); rounds alternate, added latency = Envoy − direct per round; medians and
  spread over rounds. The bare Envoy is the machine's floor in the same minutes: what
  any Envoy adds here, so "config over bare" is what the compiled config costs on top.
  Also each Envoy's CPU time per request through it (user + system, from /proc, over the
  rounds' Envoy requests): far steadier than latency on a shared machine, and what a
  filter costs shows there first. `--without usage access_log` leaves built-in features
  out of the config (what each costs; the rows say what was left out).
- split: route-0 is an 80/20 blue/green split; REQUESTS requests through Envoy, the
  observed blue share and its deviation from 0.8 in binomial sigmas
  (sqrt(0.8 × 0.2 / REQUESTS)).

    .venv/bin/python -m bench.dataplane [--routes 10 1000] [--servers 2] [--rounds 5]
        [--count 2000] [--split-requests 10000] [--without PLUGIN ...] [--quick]
Writes bench/results/dataplane.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import _stack
from bench._common import BENCH, machine, write_result
from controller.local.envoy_process import EnvoyProcess
from routing_engine.api.resources import ObjectKey
from routing_engine.engine import static_bootstrap
from routing_engine.translate.builtin import builtin
from routing_engine.translate.plugin import Plugin
from tests.support import free_port
from tests.support.static_proxy import proxy_bootstrap

SPLIT = (80, 20)


def pin(pid: int | None) -> None:
    """Server side on the first CPU (the load generator takes the last)."""
    cpus = sorted(os.sched_getaffinity(0))
    if pid is not None and len(cpus) > 1:
        try:
            os.sched_setaffinity(pid, {cpus[0]})
        except OSError:
            pass


async def load(url: str, count: int, warmup: int) -> dict[str, Any]:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(BENCH / "_loadgen.py"), url, str(count), str(warmup), "x-modelinfer"],
        capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if set(result["statuses"]) != {"200"}:
        raise RuntimeError(f"non-200 answers from {url}: {result['statuses']}")
    return result


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def extra_server_docs(servers: int, port: int) -> list[dict[str, Any]]:
    """ModelServers beyond blue and green, on the same port, each with its own path."""
    docs = []
    for k in range(max(0, servers - 2)):
        doc = _stack.server_doc(f"extra-{k}", port)
        doc["spec"]["modelInferRef"]["name"] = "infer-blue"
        docs.append(doc)
    return docs


def plugins_without(names: Sequence[str]) -> tuple[Plugin, ...] | None:
    """The built-in features but `names` (None: all of them, the translator's default)."""
    if not names:
        return None
    known = {p.name for p in builtin()}
    if unknown := sorted(set(names) - known):
        raise SystemExit(f"--without: no built-in feature {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return tuple(p for p in builtin() if p.name not in names)


async def through(envoy: EnvoyProcess, url: str, count: int, warmup: int) -> tuple[dict[str, Any], float]:
    """One round through `envoy`, and its CPU time per request over the round."""
    pid = envoy.pid
    assert pid is not None  # started
    before = cpu_seconds(pid)
    result = await load(url, count, warmup)
    return result, (cpu_seconds(pid) - before) / (count + warmup) * 1e6


async def measure(n: int, servers: int, rounds: int, count: int, warmup: int, split_requests: int,
                  workdir: Path, without: Sequence[str] = ()) -> dict[str, Any]:
    port = free_port()
    docs = _stack.base_docs(n, port) + [_stack.route_doc(0, split=SPLIT)] + extra_server_docs(servers, port)
    with _stack.mock_engines("blue", "green") as engines:
        for engine in engines.values():
            pin(engine.proc.pid)
        endpoints = {ObjectKey("ModelInfer", _stack.NS, f"infer-{c}"): e.endpoint() for c, e in engines.items()}
        compiler = _stack.StaticCompiler(scoped=True, plugins=plugins_without(without))
        compiled = compiler.compile(_stack.to_objects(docs), endpoints)
        bootstrap = static_bootstrap(compiled.resources, admin_port=free_port())
        envoy = EnvoyProcess(bootstrap, workdir, name=f"dataplane-{n}", log_level="warning")
        bare_port = free_port()
        bare = EnvoyProcess(proxy_bootstrap(bare_port, engines["blue"].port, admin_port=free_port()), workdir,
                            name=f"bare-{n}",
                            log_level="warning")
        await envoy.start(timeout=120)
        try:
            await bare.start(timeout=60)
            pin(envoy.pid)
            pin(bare.pid)
            probe = max(2, n // 4 * 2)  # an even (blue) route mid-table; needs n >= 3
            path = f"/v1/models/r{probe}/infer"
            via = f"http://127.0.0.1:{port}{path}"
            direct = f"http://127.0.0.1:{engines['blue'].port}{path}"
            first = await load(via, 1, 0)
            if first["header_values"] != {_stack.header_marker("blue"): 1}:
                raise RuntimeError(f"route r{probe} not served by blue through Envoy: {first}")
            per_round: list[dict[str, Any]] = []
            for _ in range(rounds):
                d = await load(direct, count, warmup)
                b, bare_cpu_us = await through(bare, f"http://127.0.0.1:{bare_port}{path}", count, warmup)
                e, cpu_us = await through(envoy, via, count, warmup)
                per_round.append({"direct": d, "bare": b, "envoy": e, "envoy_cpu_us_per_request": cpu_us,
                                  "bare_cpu_us_per_request": bare_cpu_us,
                                  "added_p50_us": e["p50_us"] - d["p50_us"], "added_p99_us": e["p99_us"] - d["p99_us"],
                                  "bare_added_p50_us": b["p50_us"] - d["p50_us"],
                                  "bare_added_p99_us": b["p99_us"] - d["p99_us"]})
            split = await load(f"http://127.0.0.1:{port}/v1/models/r0/infer", split_requests, warmup)
        finally:
            await bare.stop()
            await envoy.stop()
    blue = split["header_values"].get(_stack.header_marker("blue"), 0)
    green = split["header_values"].get(_stack.header_marker("green"), 0)
    share = blue / split_requests
    expected = SPLIT[0] / sum(SPLIT)
    sigma = math.sqrt(expected * (1 - expected) / split_requests)
    return {"routes": n, "servers": max(2, servers), "without": sorted(without), "probe_route": f"r{probe}",
            "rounds": rounds, "count": count, "warmup": warmup,
            "direct_p50_us": _spread([r["direct"]["p50_us"] for r in per_round]),
            "direct_p99_us": _spread([r["direct"]["p99_us"] for r in per_round]),
            "envoy_p50_us": _spread([r["envoy"]["p50_us"] for r in per_round]),
            "envoy_p99_us": _spread([r["envoy"]["p99_us"] for r in per_round]),
            "added_p50_us": _spread([r["added_p50_us"] for r in per_round]),
            "added_p99_us": _spread([r["added_p99_us"] for r in per_round]),
            "envoy_cpu_us_per_request": _spread([r["envoy_cpu_us_per_request"] for r in per_round]),
            "bare_added_p50_us": _spread([r["bare_added_p50_us"] for r in per_round]),
            "bare_added_p99_us": _spread([r["bare_added_p99_us"] for r in per_round]),
            "bare_cpu_us_per_request": _spread([r["bare_cpu_us_per_request"] for r in per_round]),
            "config_over_bare_p50_us": _spread([r["added_p50_us"] - r["bare_added_p50_us"] for r in per_round]),
            "config_over_bare_cpu_us": _spread([r["envoy_cpu_us_per_request"] - r["bare_cpu_us_per_request"]
                                                for r in per_round]),
            "split": {"requests": split_requests, "weights": list(SPLIT), "blue": blue, "green": green,
                      "blue_share": round(share, 4), "sigma": round(sigma, 5),
                      "deviation_sigmas": round((share - expected) / sigma, 2)},
            "per_round": per_round}


async def run(sizes: list[int], servers: list[int], rounds: int, count: int, warmup: int,
              split_requests: int, without: Sequence[str] = ()) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        for s in servers:
            with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
                rows.append(await measure(n, s, rounds, count, warmup, split_requests, Path(tmp), without))
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--servers", type=int, nargs="+", default=[2],
                        help="ModelServers on the port (blue, green and more), one row per value and size")
    parser.add_argument("--without", nargs="+", default=[], metavar="PLUGIN",
                        help="built-in features left out of the config (e.g. usage access_log)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--count", type=int, default=None, help="timed requests per round and mode")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--split-requests", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 300, 1,000 split requests")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    count = args.count or (300 if args.quick else 2000)
    split_requests = args.split_requests or (1000 if args.quick else 10_000)
    plugins_without(args.without)  # an unknown name fails before anything starts
    rows = asyncio.run(run(args.routes, args.servers, rounds, count, args.warmup, split_requests, args.without))
    if args.without:
        print(f"without: {', '.join(sorted(args.without))}")
    print(f"{'routes':>7} {'servers':>7} {'direct p50':>10} {'envoy p50':>10} {'added p50':>10} {'added p99':>10}"
          f" {'envoy CPU/req':>13} {'bare: added p50':>15} {'p99':>7} {'CPU/req':>8}   split 80/20")
    for r in rows:
        s = r["split"]
        print(f"{r['routes']:>7,} {r['servers']:>7,} {r['direct_p50_us']['median']:>7.0f} us"
              f" {r['envoy_p50_us']['median']:>7.0f} us {r['added_p50_us']['median']:>7.0f} us"
              f" {r['added_p99_us']['median']:>7.0f} us {r['envoy_cpu_us_per_request']['median']:>10.0f} us"
              f" {r['bare_added_p50_us']['median']:>12.0f} us {r['bare_added_p99_us']['median']:>4.0f} us"
              f" {r['bare_cpu_us_per_request']['median']:>5.0f} us"
              f"   {s['blue_share'] * 100:.2f}% of {s['requests']:,} ({s['deviation_sigmas']:+.2f} sigma)")
    out = {"benchmark": "dataplane", "quick": args.quick, "machine": machine(),
           "command": "python -m bench.dataplane " + " ".join(argv if argv is not None else sys.argv[1:]),
           "load_generator": "bench/_loadgen.py: stdlib http.client, closed loop, 1 keep-alive connection, own process "
                             "pinned to the last CPU; Envoy and backends pinned to the first",
           "rows": rows}
    path = write_result("dataplane", out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
