"""Metrics, admin HTTP, status hooks and the per-type (non-ADS) services, end to end."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.listener.v3 import lds_pb2_grpc
from prometheus_client import CollectorRegistry

from tests.xds.client import AdsClient, contents_of, names_of, res, until
from xds_server import Hooks, Snapshot, StreamInfo, start_control_plane
from xds_server.hooks import HookSet
from xds_server.types import CLUSTER, LISTENER, ROUTE


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, port, path)


async def test_metrics_debug_nodes_and_status_hooks() -> None:
    registry = CollectorRegistry()
    acks, nacks = [], []
    plane = await start_control_plane(xds_address="127.0.0.1:0", registry=registry,
                                      on_ack=lambda *a: acks.append(a), on_nack=lambda *a: nacks.append(a))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}")
    client = AdsClient(channel, node_id="gw-1", cluster="gateway")
    try:
        assert plane.admin_port is not None
        assert await get(plane.admin_port, "/healthz") == (200, "ok\n")
        assert (await get(plane.admin_port, "/readyz"))[0] == 503
        plane.cache.set_snapshot("gateway", Snapshot.build([res(CLUSTER, "c1"), res(ROUTE, "r1")]))
        assert (await get(plane.admin_port, "/readyz"))[0] == 200

        await client.request(CLUSTER)
        cds = await client.recv()
        await client.ack(cds)
        await client.request(ROUTE, ["r1"])
        rds = await client.recv()
        await client.nack(rds, ["r1"], error="route r1: bad regex")
        await until(lambda: len(nacks) == 1, what="NACK seen")

        assert acks == [("gateway", CLUSTER, ["c1"], cds.version_info)]
        assert nacks == [("gateway", ROUTE, ["r1"], "route r1: bad regex", rds.version_info)]
        value = registry.get_sample_value
        assert value("modelroute_xds_connected_streams", {"kind": "ads"}) == 1
        assert value("modelroute_xds_pushes_total", {"type": "CDS"}) == 1
        assert value("modelroute_xds_push_bytes_total", {"type": "RDS"}) == rds.ByteSize()
        assert value("modelroute_xds_nacks_total", {"type": "RDS"}) == 1
        assert value("modelroute_xds_ack_latency_seconds_count", {"type": "CDS"}) == 1
        assert value("modelroute_xds_snapshot_build_seconds_count") == 1

        status, text = await get(plane.admin_port, "/metrics")
        assert status == 200 and 'modelroute_xds_nacks_total{type="RDS"} 1.0' in text
        status, body = await get(plane.admin_port, "/debug/nodes")
        node = json.loads(body)["gw-1"]
        assert node["node_group"] == "gateway" and node["streams"] == 1
        assert node["types"]["CDS"]["acked_version"] == cds.version_info
        assert node["types"]["RDS"]["nacked_version"] == rds.version_info
        assert node["types"]["RDS"]["nack_error"] == "route r1: bad regex"
        assert node["types"]["RDS"]["acked_version"] == ""

        client.close()
        for _ in range(50):
            if registry.get_sample_value("modelroute_xds_connected_streams", {"kind": "ads"}) == 0:
                break
            await asyncio.sleep(0.05)
        assert registry.get_sample_value("modelroute_xds_connected_streams", {"kind": "ads"}) == 0
    finally:
        client.close()
        await channel.close()
        await plane.stop(grace=None)


async def test_per_type_service_for_non_ads_clients() -> None:
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None,
                                      registry=CollectorRegistry())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}")
    try:
        plane.cache.set_snapshot("gateway", Snapshot.build([res(LISTENER, "l1"), res(LISTENER, "l2")]))
        stub = lds_pb2_grpc.ListenerDiscoveryServiceStub(channel)
        node = base_pb2.Node(id="n", cluster="gateway")
        call = stub.StreamListeners()
        await call.write(discovery_pb2.DiscoveryRequest(node=node))  # type_url may be omitted here
        response = await asyncio.wait_for(call.read(), 3)
        assert response.type_url == LISTENER and names_of(response) == ["l1", "l2"]
        call.cancel()

        fetched = await stub.FetchListeners(discovery_pb2.DiscoveryRequest(node=node, resource_names=["l2"]))
        assert names_of(fetched) == ["l2"] and fetched.version_info

        wrong = stub.StreamListeners()
        await wrong.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(wrong.read(), 3)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close()
        await plane.stop(grace=None)


async def test_snapshots_set_while_a_response_is_unacknowledged_reach_the_stream_as_one_push_of_the_last() -> None:
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None, registry=CollectorRegistry())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}")
    client = AdsClient(channel)
    try:
        plane.cache.set_snapshot("gateway", Snapshot.build([res(ROUTE, "r", "v0")]))
        await client.request(ROUTE, ["r"])
        initial = await client.recv()
        plane.cache.set_snapshot("gateway", Snapshot.build([res(ROUTE, "r", "v1")]))
        await client.expect_silence(0.2)  # one response in flight per type
        for i in range(2, 6):
            plane.cache.set_snapshot("gateway", Snapshot.build([res(ROUTE, "r", f"v{i}")]))
        await client.ack(initial, ["r"])
        latest = await client.recv(timeout=3)
        assert contents_of(latest) == {"r": "v5"}  # v1..v4 coalesced away
        await client.ack(latest, ["r"])
        await client.expect_silence(0.5)
    finally:
        client.close()
        await channel.close()
        await plane.stop(grace=None)


async def test_per_type_delta_service() -> None:
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None,
                                      registry=CollectorRegistry())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}")
    try:
        plane.cache.set_snapshot("gateway", Snapshot.build([res(CLUSTER, "c1")]))
        call = cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).DeltaClusters()
        await call.write(discovery_pb2.DeltaDiscoveryRequest(node=base_pb2.Node(id="n", cluster="gateway")))
        response = await asyncio.wait_for(call.read(), 3)
        assert response.type_url == CLUSTER and [r.name for r in response.resources] == ["c1"]
        call.cancel()
    finally:
        await channel.close()
        await plane.stop(grace=None)


def test_a_hook_set_inside_a_hook_set_calls_each_hook_once_in_order() -> None:
    calls: list[str] = []

    class Recorder(Hooks):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_stream_open(self, stream: StreamInfo) -> None:
            calls.append(self.name)

    inner = HookSet([Recorder("a"), Hooks(), Recorder("b")])
    outer = HookSet([inner, Recorder("c")])
    outer.on_stream_open(StreamInfo(1, "ads", "n", "gateway"))
    outer.on_stream_close(StreamInfo(1, "ads", "n", "gateway"))  # no hook overrides it
    assert calls == ["a", "b", "c"]
