"""Edit → served through a real Envoy: one route changes, how long until it is served.

Synthetic (routes built directly from protos, no engine): the clock starts at
`set_snapshot` with the already-built snapshot and stops when a request through Envoy
first gets the new response (SPEC 5). Scenarios:
- one RouteConfiguration holding all N routes (the whole table is one resource, so the
  whole table is re-sent and re-parsed by Envoy on every edit);
- N routes split over 100 RouteConfigurations (one listener each): only the changed
  RouteConfiguration goes on the wire (SotW RDS and delta both send just that one).

    .venv/bin/python bench/xds_convergence.py [--edits 30]
Writes bench/results/xds_convergence.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from tests.support import free_port  # noqa: E402
from tests.xds.envoy_support import EnvoyProcess, ProtoResource, eds_cluster, endpoints, listener, route_config  # noqa: E402
from xds_server import Snapshot, start_control_plane  # noqa: E402


def tables(total_routes: int, split: int, ports: list[int], edit: int,
           cache: dict[int, list[ProtoResource]]) -> list[ProtoResource]:
    """`split` RouteConfigurations sharing `total_routes`; the probe route is in table 0,
    which is the only one rebuilt per edit (the others are built once, like an engine
    that recompiles only what changed)."""
    per_table = total_routes // split
    if not cache:
        cache[0] = [eds_cluster("backend"), endpoints("backend", 9)]
        for t in range(1, split):
            cache[t] = [listener(f"l{t}", ports[t], f"r{t}"),
                        route_config(f"r{t}", cluster="backend", extra_routes=per_table)]
    probe = [listener("l0", ports[0], "r0"),
             route_config("r0", cluster="backend", direct={"/probe": f"edit-{edit}"}, extra_routes=per_table - 1)]
    return [r for t in sorted(cache) for r in cache[t]] + probe


def wait_served(port: int, expected: bytes, timeout: float = 30.0) -> float:
    """Poll /probe over one keep-alive connection; perf_counter() when `expected` arrives."""
    deadline = time.perf_counter() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        while time.perf_counter() < deadline:
            try:
                conn.request("GET", "/probe")
                body = conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                time.sleep(0.005)
                continue
            if body == expected:
                return time.perf_counter()
    finally:
        conn.close()
    raise TimeoutError(f"/probe never answered {expected!r}")


async def scenario(name: str, total_routes: int, split: int, delta: bool, edits: int) -> dict[str, object]:
    ports = [free_port() for _ in range(split)]
    xds_port = free_port()
    registry = CollectorRegistry()
    plane = await start_control_plane(xds_address=f"127.0.0.1:{xds_port}", admin_host=None, registry=registry)

    def rds_wire_bytes() -> float:
        return registry.get_sample_value("modelroute_xds_push_bytes_total", {"type": "RDS"}) or 0.0

    built: dict[int, list[ProtoResource]] = {}
    envoy = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            plane.cache.set_snapshot("gateway", Snapshot.build(tables(total_routes, split, ports, 0, built)))
            envoy = await asyncio.to_thread(EnvoyProcess, Path(tmp), xds_port=xds_port, delta=delta)
            await asyncio.to_thread(wait_served, ports[0], b"edit-0", 60)
            samples = []
            wire_before = rds_wire_bytes()
            for i in range(1, edits + 1):
                snapshot = Snapshot.build(tables(total_routes, split, ports, i, built))
                await asyncio.sleep(0.3)  # isolated edits: the debounce's leading edge
                result: list[float] = []
                poller = threading.Thread(target=lambda: result.append(wait_served(ports[0], f"edit-{i}".encode())))
                started = time.perf_counter()
                plane.cache.set_snapshot("gateway", snapshot)
                poller.start()
                await asyncio.to_thread(poller.join, 60)
                if not result:
                    raise RuntimeError(f"{name}: edit {i} never served")
                samples.append((result[0] - started) * 1000)
            ms = np.array(samples)
            row = {"scenario": name, "routes": total_routes, "route_configs": split,
                   "ads": "delta" if delta else "sotw", "edits": edits,
                   "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
                   "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1),
                   "changed_table_bytes": len(snapshot.of_type(
                       "type.googleapis.com/envoy.config.route.v3.RouteConfiguration")["r0"].body),
                   "rds_wire_bytes_per_edit": round((rds_wire_bytes() - wire_before) / edits)}
            return row
        finally:
            if envoy is not None:
                await asyncio.to_thread(envoy.stop)
            await plane.stop(grace=None)


SCENARIOS = [
    ("100 routes, 1 table", 100, 1, False),
    ("10,000 routes, 1 table", 10_000, 1, False),
    ("10,000 routes, 100 tables", 10_000, 100, False),
    ("10,000 routes, 100 tables, delta", 10_000, 100, True),
]


async def main(edits: int) -> None:
    rows = []
    for name, routes, split, delta in SCENARIOS:
        rows.append(await scenario(name, routes, split, delta, edits))
        print(rows[-1], file=sys.stderr)
    print(f"{'scenario':<36} {'ADS':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'RDS wire bytes/edit':>20}")
    for r in rows:
        print(f"{r['scenario']:<36} {r['ads']:>5} {r['p50_ms']:>7} {r['p95_ms']:>7} {r['p99_ms']:>7} "
              f"{r['max_ms']:>7} {r['rds_wire_bytes_per_edit']:>20}")
    out = REPO / "bench" / "results" / "xds_convergence.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "xds_convergence", "cpus": os.cpu_count(), "results": rows},
                              indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=30)
    asyncio.run(main(parser.parse_args().edits))
