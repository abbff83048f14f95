"""Fan-out: how long until N concurrent ADS streams have all ACKed one change.

The control plane runs in this process; the N Python ADS clients run in a child process
(its own core), each subscribed to CDS (wildcard) and one RouteConfiguration, ACKing
everything. After all have their initial config, one route changes; the clock runs from
`set_snapshot` to the last ACK of the new version, counted by a server hook. Also
reports the control plane's RSS and CPU time for the push.

    .venv/bin/python bench/xds_fanout.py [--streams 1 100 1000] [--pushes 1] [--ads delta|sotw]
Writes bench/results/xds_fanout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from bench._common import machine  # noqa: E402
from tests.xds.envoy_support import eds_cluster, endpoints, listener, route_config  # noqa: E402
from xds_server import Hooks, Snapshot, StreamInfo, start_control_plane  # noqa: E402
from xds_server.types import CLUSTER, ROUTE  # noqa: E402

STREAMS_PER_CHANNEL = 100


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def world(edit: int) -> Snapshot:
    return Snapshot.build([eds_cluster("backend"), endpoints("backend", 9), listener("main", 10000, "main"),
                           route_config("main", cluster="backend", direct={"/probe": f"edit-{edit}"},
                                        extra_routes=100)])


# ---- client side (child process) ----

async def one_client(channel: grpc.aio.Channel, index: int, ready: asyncio.Event, counter: list[int],
                     total: int, delta: bool) -> None:
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    node = base_pb2.Node(id=f"bench-{index}", cluster="gateway")
    if delta:
        call = stub.DeltaAggregatedResources()
        await call.write(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=CLUSTER))
        await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=ROUTE, resource_names_subscribe=["main"]))
    else:
        call = stub.StreamAggregatedResources()
        await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
        await call.write(discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=["main"]))
    got_route = False
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            return
        if delta:
            await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url,
                                                                 response_nonce=response.nonce))
        else:
            names = ["main"] if response.type_url == ROUTE else []
            await call.write(discovery_pb2.DiscoveryRequest(type_url=response.type_url, resource_names=names,
                                                            version_info=response.version_info,
                                                            response_nonce=response.nonce))
        if response.type_url == ROUTE and not got_route:
            got_route = True
            counter[0] += 1
            if counter[0] == total:
                ready.set()


async def client_main(port: int, streams: int, delta: bool) -> None:
    # A channel of its own connection each (channels to one target otherwise share one
    # subchannel, and the server takes at most MAX_STREAMS_PER_CONNECTION on it).
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range((streams + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)]
    ready, counter = asyncio.Event(), [0]
    tasks = [asyncio.create_task(one_client(channels[i // STREAMS_PER_CHANNEL], i, ready, counter, streams, delta))
             for i in range(streams)]
    await asyncio.wait_for(ready.wait(), 120)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # parent says stop
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()


# ---- server side ----

class AckCounter(Hooks):
    def __init__(self) -> None:
        self.version = ""
        self.acked = 0
        self.done = asyncio.Event()
        self.target = 0

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        if type_url == ROUTE and version == self.version:
            self.acked += 1
            if self.acked == self.target:
                self.done.set()


class GcClock:
    """Time spent in garbage collections while started (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0  # generation-2 collections
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.full += info["generation"] == 2

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def run(streams: int, pushes: int = 1, delta: bool = True) -> dict[str, Any]:
    """The first push's numbers; with `pushes` > 1 also each later push's (`later`), one
    after the other: whether a push meets a full garbage collection depends on what the
    ones before it left (each push replaces every stream's pending gRPC read)."""
    counter = AckCounter()
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None, hooks=[counter],
                                      registry=CollectorRegistry())
    plane.cache.set_snapshot("gateway", world(0))
    child = subprocess.Popen([sys.executable, __file__, "--client", str(plane.xds_port), str(streams),
                              "delta" if delta else "sotw"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 180)  # type: ignore[union-attr]
        assert line.strip() == "ready", f"client process: {line!r}"
        await asyncio.sleep(0.5)
        rss_before = rss_mb()
        measured = []
        for edit in range(1, pushes + 1):
            cpu_before = cpu_s()
            changed = world(edit)
            counter.version, counter.target, counter.acked, counter.done = changed.version(ROUTE), streams, 0, \
                asyncio.Event()
            with GcClock() as collector:
                started = time.perf_counter()
                plane.cache.set_snapshot("gateway", changed)
                await asyncio.wait_for(counter.done.wait(), 120)
                elapsed = time.perf_counter() - started
            measured.append({"all_acked_s": round(elapsed, 4), "cpu_s": round(cpu_s() - cpu_before, 3),
                             "gc_s": round(collector.seconds, 3), "full_gcs": collector.full})
        row: dict[str, Any] = {"streams": streams, "ads": "delta" if delta else "sotw", **measured[0],
                               "rss_mb": round(rss_mb(), 1), "rss_before_mb": round(rss_before, 1),
                               "load_avg_1m": round(os.getloadavg()[0], 2)}
        if pushes > 1:
            row["later"] = measured[1:]
        return row
    finally:
        if child.poll() is None:
            try:
                child.stdin.write("stop\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
                child.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                child.kill()
                child.wait(timeout=10)
        await plane.stop(grace=None)


async def main(sizes: list[int], pushes: int, delta: bool) -> None:
    rows = []
    for n in sizes:
        rows.append(await run(n, pushes, delta))
        print(f"{rows[-1]}", file=sys.stderr)
    print(f"{'ADS':>5} {'streams':>8} {'all ACKed (s)':>14} {'CPU (s)':>8} {'of it GC (s)':>13} {'RSS (MB)':>9}"
          f" {'load':>5}")
    for row in rows:
        print(f"{row['ads']:>5} {row['streams']:>8} {row['all_acked_s']:>14.4f} {row['cpu_s']:>8.3f}"
              f" {row['gc_s']:>13.3f} {row['rss_mb']:>9.1f} {row['load_avg_1m']:>5.2f}")
        for number, later in enumerate(row.get("later", ()), start=2):
            print(f"{'':>5} {f'push {number}':>8} {later['all_acked_s']:>14.4f} {later['cpu_s']:>8.3f}"
                  f" {later['gc_s']:>13.3f}")
    out = REPO / "bench" / "results" / "xds_fanout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "xds_fanout", "cpus": os.cpu_count(), "machine": machine(),
                               "command": "python bench/xds_fanout.py " + " ".join(sys.argv[1:]),
                               "results": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        asyncio.run(client_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "delta"))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--streams", type=int, nargs="+", default=[1, 100, 1000])
        parser.add_argument("--pushes", type=int, default=1,
                            help="changes pushed one after the other to the same streams (rows: the first)")
        parser.add_argument("--ads", choices=("delta", "sotw"), default="delta",
                            help="how the clients subscribe (delta: what Envoys are configured with by default)")
        args = parser.parse_args()
        asyncio.run(main(args.streams, args.pushes, args.ads == "delta"))
