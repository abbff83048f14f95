"""Edit → served through a real Envoy: one route changes, how long until it is served.

Synthetic (routes built directly from protos, no engine): the clock starts at
`set_snapshot` with the already-built snapshot and stops when a request through Envoy
first gets the new response (SPEC 5). Scenarios:
- one RouteConfiguration holding all N routes (the whole table is one resource, so the
  whole table is re-sent and re-parsed by Envoy on every edit);
- N routes split over 100 RouteConfigurations (one listener each): only the changed
  RouteConfiguration goes on the wire (SotW RDS and delta both send just that one);
- N routes on ONE listener split by scoped RDS (what the engine does for a port whose
  routes have distinct path prefixes): the key is the listener's tag and the first path
  segments of the normalized path without query (an early header mutation writes them
  into a header the scope key builder splits), one scope per prefix, the scopes' routes
  spread over T RouteConfigurations; an edit re-sends one of those tables. These rows
  also time the start: from Envoy's launch to the last route of the world being served;
- `--start N`: the engine's own output for N ModelRoutes (bench/_stack.py's world: one
  port, mock-engine backends, scoped tables) served over ADS to an Envoy launched from
  nothing: the time from the launch until every one of 100 routes spread over the
  whole world (and the last one) answers from its backend;
- `--start-servers N`: the same for `bench/worlds.py`'s N ModelRoutes + N ModelServers
  (the compile benchmark's world: 2N clusters, a failover pair per route), timed to
  Envoy's LIVE and to 100 servers' paths answered.

    .venv/bin/python bench/xds_convergence.py [--edits 30] [--start N ...] [--start-servers N ...] [--only start]
Writes bench/results/xds_convergence.json (with `--only start`: xds_start.json).
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

from bench._common import machine  # noqa: E402
from tests.support import free_port  # noqa: E402
from envoy.config.route.v3 import route_pb2, scoped_route_pb2  # noqa: E402
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: E402
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2  # noqa: E402
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_pb2  # noqa: E402
from tests.xds.envoy_support import EnvoyProcess, ProtoResource, eds_cluster, endpoints, listener, route_config  # noqa: E402
from xds_server import Snapshot, start_control_plane  # noqa: E402
from xds_server.types import LISTENER, ROUTE, SCOPED_ROUTE  # noqa: E402

SCOPE_HEADER = "x-modelroute-scope"
SCOPE_DEPTH = 3  # /v1/models/r{i}


def scoped_listener(name: str, port: int, tag: str) -> ProtoResource:
    """One listener whose HCM picks its route table by scope: key = (tag, first
    SCOPE_DEPTH segments of the normalized path without query, padded with empty ones)."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name, normalize_path={"value": True}, merge_slashes=True)
    mutation = header_mutation_pb2.HeaderMutation()
    append = mutation.mutations.add().append
    append.header.key, append.header.value = SCOPE_HEADER, tag + "%PATH(NQ)%" + "/" * SCOPE_DEPTH
    append.append_action = append.OVERWRITE_IF_EXISTS_OR_ADD
    early = hcm.early_header_mutation_extensions.add(name="modelroute.scope")
    early.typed_config.Pack(mutation)
    scoped = hcm.scoped_routes
    scoped.name = name
    for index in range(SCOPE_DEPTH + 1):
        extractor = scoped.scope_key_builder.fragments.add().header_value_extractor
        extractor.name, extractor.element_separator, extractor.index = SCOPE_HEADER, "/", index
    scoped.rds_config_source.ads.SetInParent()
    scoped.rds_config_source.resource_api_version = 2  # V3
    scoped.scoped_rds.scoped_rds_config_source.ads.SetInParent()
    scoped.scoped_rds.scoped_rds_config_source.resource_api_version = 2
    hcm.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
    message = listener_pb2.Listener(name=name)
    message.address.socket_address.address = "127.0.0.1"
    message.address.socket_address.port_value = port
    message.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager").typed_config.Pack(hcm)
    return ProtoResource.of(LISTENER, name, message)


def scoped_world(total_routes: int, tables_n: int, port: int, edit: int,
                 cache: dict[int, list[ProtoResource]]) -> list[ProtoResource]:
    """`total_routes` prefixes /v1/models/r{i} on one scoped listener; route i sits in
    table i % tables_n; only table 0 (which holds the probe, r0) is rebuilt per edit."""
    tag = "L1"
    if not cache:
        found = [eds_cluster("backend"), endpoints("backend", 9), scoped_listener("scoped", port, tag)]
        for i in range(total_routes):
            key = (tag, "v1", "models", f"r{i}")
            found.append(ProtoResource.of(SCOPED_ROUTE, f"scope/r{i}", scoped_route_pb2.ScopedRouteConfiguration(
                name=f"scope/r{i}", route_configuration_name=f"table/{i % tables_n}",
                key={"fragments": [{"string_key": k} for k in key]})))
        cache[0] = found
    out = list(cache[0])
    for t in range(tables_n):
        if t == 0 or t + 1 not in cache:
            message = route_pb2.RouteConfiguration(name=f"table/{t}")
            vhost = message.virtual_hosts.add(name="all", domains=["*"])
            for i in range(t, total_routes, tables_n):
                r = vhost.routes.add()
                r.match.path_separated_prefix = f"/v1/models/r{i}"
                r.direct_response.status = 200
                r.direct_response.body.inline_string = f"edit-{edit}" if i == 0 else f"r{i}"
            cache[t + 1] = [ProtoResource.of(ROUTE, f"table/{t}", message)]
        out.extend(cache[t + 1])
    return out


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


def wait_served(port: int, expected: bytes, timeout: float = 30.0, path: str = "/probe") -> float:
    """Poll `path` over one keep-alive connection; perf_counter() when `expected` arrives."""
    deadline = time.perf_counter() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        while time.perf_counter() < deadline:
            try:
                conn.request("GET", path)
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
    raise TimeoutError(f"{path} never answered {expected!r}")


async def scoped_scenario(name: str, total_routes: int, tables_n: int, delta: bool, edits: int) -> dict[str, object]:
    port = free_port()
    xds_port = free_port()
    registry = CollectorRegistry()
    plane = await start_control_plane(xds_address=f"127.0.0.1:{xds_port}", admin_host=None, registry=registry)

    def rds_wire_bytes() -> float:
        return registry.get_sample_value("modelroute_xds_push_bytes_total", {"type": "RDS"}) or 0.0

    built: dict[int, list[ProtoResource]] = {}
    envoy = None
    probe, last = "/v1/models/r0/infer", f"/v1/models/r{total_routes - 1}/infer"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            plane.cache.set_snapshot("gateway", Snapshot.build(scoped_world(total_routes, tables_n, port, 0, built)))
            launched = time.perf_counter()
            envoy = await asyncio.to_thread(EnvoyProcess, Path(tmp), xds_port=xds_port, delta=delta)
            await asyncio.to_thread(wait_served, port, b"edit-0", 60, probe)
            served_all = await asyncio.to_thread(wait_served, port, f"r{total_routes - 1}".encode(), 60, last)
            start_ms = (served_all - launched) * 1000
            samples = []
            wire_before = rds_wire_bytes()
            for i in range(1, edits + 1):
                snapshot = Snapshot.build(scoped_world(total_routes, tables_n, port, i, built))
                await asyncio.sleep(0.3)
                result: list[float] = []
                poller = threading.Thread(
                    target=lambda: result.append(wait_served(port, f"edit-{i}".encode(), path=probe)))
                started = time.perf_counter()
                plane.cache.set_snapshot("gateway", snapshot)
                poller.start()
                await asyncio.to_thread(poller.join, 60)
                if not result:
                    raise RuntimeError(f"{name}: edit {i} never served")
                samples.append((result[0] - started) * 1000)
            ms = np.array(samples)
            return {"scenario": name, "routes": total_routes, "route_configs": tables_n, "scopes": total_routes,
                    "ads": "delta" if delta else "sotw", "edits": edits,
                    "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
                    "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1),
                    "start_to_all_served_ms": round(start_ms, 1),
                    "changed_table_bytes": len(snapshot.of_type(ROUTE)["table/0"].body),
                    "rds_wire_bytes_per_edit": round((rds_wire_bytes() - wire_before) / edits)}
        finally:
            if envoy is not None:
                await asyncio.to_thread(envoy.stop)
            await plane.stop(grace=None)


async def engine_start(n: int) -> dict[str, object]:
    """An Envoy launched against the engine's compile of an N-route world: how long until
    a sample of routes spread over every table (and the last route) are served."""
    from bench import _stack
    from routing_engine.api.resources import ObjectKey
    from routing_engine.translate.xds import SCOPED_ROUTE as ENGINE_SCOPED

    port, xds_port = free_port(), free_port()
    plane = await start_control_plane(xds_address=f"127.0.0.1:{xds_port}", admin_host=None,
                                      registry=CollectorRegistry())
    envoy = None
    with _stack.mock_engines("blue", "green") as engines, tempfile.TemporaryDirectory() as tmp:
        try:
            endpoints = {ObjectKey("ModelInfer", _stack.NS, f"infer-{c}"): e.endpoint() for c, e in engines.items()}
            docs = _stack.base_docs(n, port) + [_stack.route_doc(0)]
            compiled = _stack.StaticCompiler(scoped=True).compile(_stack.to_objects(docs), endpoints)
            plane.cache.set_snapshot("gateway", Snapshot.build(
                [r for named in compiled.resources.values() for r in named.values()]))
            sample = sorted({*range(0, n, max(1, n // 100)), n - 1})
            launched = time.perf_counter()
            envoy = await asyncio.to_thread(EnvoyProcess, Path(tmp), xds_port=xds_port, delta=False)
            served = 0.0
            for i in sample:
                marker = f"{_stack.NS}/infer-{('blue', 'green')[i % 2]}".encode()
                served = await asyncio.to_thread(wait_served_by, port, f"/v1/models/r{i}/infer", marker)
            return {"scenario": f"engine world of {n:,} ModelRoutes: Envoy launch to every sampled route served",
                    "routes": n, "scopes": len(compiled.resources[ENGINE_SCOPED]),
                    "route_configs": len(compiled.resources[ROUTE]), "sampled_routes": len(sample),
                    "start_to_all_served_ms": round((served - launched) * 1000, 1)}
        finally:
            if envoy is not None:
                await asyncio.to_thread(envoy.stop)
            await plane.stop(grace=None)


async def servers_start(n: int) -> dict[str, object]:
    """An Envoy launched against the engine's compile of `bench/worlds.py`'s world (N
    ModelRoutes, N ModelServers over four ports, every route with a fallback: 2N
    clusters and 2N endpoint assignments): how long until Envoy is LIVE, and until a
    sample of servers' paths spread over the world is answered by a backend (every
    ModelInfer's replica is one of two mock engines)."""
    from bench import _stack, worlds
    from routing_engine.api.resources import ObjectKey
    from tests.xds.envoy_support import http_get

    ports = tuple(free_port() for _ in worlds.PORTS)
    xds_port = free_port()
    plane = await start_control_plane(xds_address=f"127.0.0.1:{xds_port}", admin_host=None,
                                      registry=CollectorRegistry())
    envoy = None
    with _stack.mock_engines("blue", "green") as engines, tempfile.TemporaryDirectory() as tmp:
        try:
            colors = (engines["blue"].endpoint(), engines["green"].endpoint())
            endpoints = {ObjectKey("ModelInfer", "bench", f"infer-{i}"): colors[i % 2] for i in range(n)}
            compiled = _stack.StaticCompiler(scoped=True).compile(worlds.objects(n, ports), endpoints)
            plane.cache.set_snapshot("gateway", Snapshot.build(
                [r for named in compiled.resources.values() for r in named.values()]))
            sample = sorted({*range(0, n, max(1, n // 100)), n - 1})
            launched = time.perf_counter()
            envoy = await asyncio.to_thread(EnvoyProcess, Path(tmp), xds_port=xds_port, delta=False)

            def live() -> float:
                while time.perf_counter() - launched < 120:
                    _, body = http_get(envoy.admin("/server_info"))
                    if json.loads(body)["state"] == "LIVE":
                        return time.perf_counter()
                    time.sleep(0.01)
                raise TimeoutError("Envoy never LIVE")
            live_at = await asyncio.to_thread(live)
            served = 0.0
            for i in sample:
                served = await asyncio.to_thread(wait_served_by, ports[i % len(ports)], f"/v1/models/m{i}/infer", None)
            clusters = compiled.resources["type.googleapis.com/envoy.config.cluster.v3.Cluster"]
            return {"scenario": f"engine world of {n:,} ModelRoutes + {n:,} ModelServers: Envoy launch to LIVE, "
                                "to every sampled server's path served",
                    "routes": n, "servers": n, "clusters": len(clusters),
                    "failover_clusters": sum(name.startswith("failover/") for name in clusters),
                    "sampled_routes": len(sample), "start_to_live_ms": round((live_at - launched) * 1000, 1),
                    "start_to_all_served_ms": round((served - launched) * 1000, 1)}
        finally:
            if envoy is not None:
                await asyncio.to_thread(envoy.stop)
            await plane.stop(grace=None)


def wait_served_by(port: int, path: str, marker: bytes | None, timeout: float = 60.0) -> float:
    """POST `path` until the answer's `x-modelinfer` is `marker` (None: any backend's
    200); perf_counter() then."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", path, body=b"{}", headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            if (response.getheader("x-modelinfer") or "").encode() == marker or (
                    marker is None and response.status == 200 and response.getheader("x-modelinfer")):
                return time.perf_counter()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.005)
    raise TimeoutError(f"{path} never served by {marker!r}")


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
            launched = time.perf_counter()
            envoy = await asyncio.to_thread(EnvoyProcess, Path(tmp), xds_port=xds_port, delta=delta)
            await asyncio.to_thread(wait_served, ports[0], b"edit-0", 60)
            start_ms = (time.perf_counter() - launched) * 1000
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
                   "start_to_all_served_ms": round(start_ms, 1),
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
SCOPED_SCENARIOS = [
    ("10,000 routes, 1 listener, 10,000 scopes, 100 tables", 10_000, 100, False),
    ("10,000 routes, 1 listener, 10,000 scopes, 100 tables, delta", 10_000, 100, True),
]


async def main(edits: int, only: str | None, start: list[int], start_servers: list[int]) -> None:
    rows = []
    for n in start:
        rows.append(await engine_start(n))
        print(rows[-1], file=sys.stderr)
    for n in start_servers:
        rows.append(await servers_start(n))
        print(rows[-1], file=sys.stderr)
    for name, routes, split, delta in SCENARIOS:
        if only in (None, "split"):
            rows.append(await scenario(name, routes, split, delta, edits))
            print(rows[-1], file=sys.stderr)
    for name, routes, split, delta in SCOPED_SCENARIOS:
        if only in (None, "scoped"):
            rows.append(await scoped_scenario(name, routes, split, delta, edits))
            print(rows[-1], file=sys.stderr)
    print(f"{'scenario':<36} {'ADS':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'RDS wire bytes/edit':>20}")
    for r in rows:
        if "clusters" in r:
            print(f"{r['scenario']}: LIVE {r['start_to_live_ms']} ms, served {r['start_to_all_served_ms']} ms "
                  f"({r['clusters']} clusters)")
            continue
        if "p50_ms" not in r:
            print(f"{r['scenario']}: {r['start_to_all_served_ms']} ms ({r['scopes']} scopes, {r['route_configs']} tables)")
            continue
        print(f"{r['scenario']:<36} {r['ads']:>5} {r['p50_ms']:>7} {r['p95_ms']:>7} {r['p99_ms']:>7} "
              f"{r['max_ms']:>7} {r['rds_wire_bytes_per_edit']:>20}")
    out = REPO / "bench" / "results" / ("xds_start.json" if only == "start" else "xds_convergence.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": out.stem, "cpus": os.cpu_count(), "machine": machine(),
                               "command": "python bench/xds_convergence.py " + " ".join(sys.argv[1:]),
                               "results": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--only", choices=["split", "scoped", "start"],
                        help="run only these scenarios (start: only the --start and --start-servers rows)")
    parser.add_argument("--start", type=int, nargs="*", default=[],
                        help="also time an Envoy starting against the engine's N-route world")
    parser.add_argument("--start-servers", type=int, nargs="*", default=[],
                        help="also time an Envoy starting against bench/worlds.py's N routes + N servers")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.edits, arguments.only, arguments.start, arguments.start_servers))
