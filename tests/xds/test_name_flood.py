"""Issue #14: 8 clients asking for 400,000 resource names each drove the control plane to
1.25 GB. The limits (`xds_server.server.Limits`) refuse them: the control plane, run as
its own process, stays under MEMORY_BOUND_MB of resident memory through the flood, and
keeps serving a well-behaved client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tests.support import stop_process
from xds_server.types import CLUSTER, ENDPOINT, ROUTE

pytestmark = pytest.mark.slow

MEMORY_BOUND_MB = 250  # the control plane's resident memory, flood included
CLIENTS, NAMES = 8, 400_000
SERVER = """
import asyncio, sys
from xds_server import Snapshot, start_control_plane
from tests.xds.client import res
from xds_server.types import CLUSTER
async def main():
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None)
    plane.cache.set_snapshot("gateway", Snapshot.build([res(CLUSTER, "c")]))
    print(plane.xds_port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def flood(port: int, client: int, *, delta: bool) -> str:
    """The final status the server gave a client that asks for NAMES names."""
    node = base_pb2.Node(id=f"flood-{client}", cluster="gateway")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch)
        names = [f"route-{client}-{i}" for i in range(NAMES)]
        call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        try:
            if delta:  # small subscriptions, each under the size cap; the second one crosses the
                # name limit. No third: a write after the server ended the stream fails in the
                # client, which then reports its own INTERNAL instead of the server's status.
                for start in (0, 40_000):
                    await call.write(discovery_pb2.DeltaDiscoveryRequest(
                        node=node, type_url=ENDPOINT, resource_names_subscribe=names[start:start + 40_000]))
            else:  # the second one is over gRPC's request size cap too
                for chunk in (names[:40_000], names[:300_000]):
                    await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=ROUTE, resource_names=chunk))
            while not call.done():
                await asyncio.wait_for(call.read(), 10)
        except grpc.aio.AioRpcError:
            pass  # a write or read after the server ended the call: its status says why
        return (await call.code()).name


async def test_a_name_flood_is_refused_and_memory_stays_bounded(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        before = rss_mb(proc.pid)
        peak = before
        floods = asyncio.gather(*(flood(port, i, delta=i % 2 == 1) for i in range(CLIENTS)))
        while not floods.done():
            peak = max(peak, rss_mb(proc.pid))
            await asyncio.sleep(0.05)
        outcomes = await floods
        peak = max(peak, rss_mb(proc.pid))
        print(f"control plane RSS: {before:.0f} MB before, {peak:.0f} MB at most during the flood")
        assert set(outcomes) == {"RESOURCE_EXHAUSTED"}, outcomes
        assert peak < MEMORY_BOUND_MB, f"{peak:.0f} MB"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:  # still serves others
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
            await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="ok", cluster="gateway"),
                                                            type_url=CLUSTER))
            response = await asyncio.wait_for(call.read(), 5)
            assert [a.value for a in response.resources] == [b"c:v1"]
            call.cancel()
    finally:
        stop_process(proc)
