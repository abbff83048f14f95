"""Streams fail cleanly on protocol violations, and a failing observer never breaks one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client import CollectorRegistry

from tests.xds.client import AdsClient, names_of, res
from xds_server import Hooks, Snapshot, StreamInfo, start_control_plane
from xds_server.types import CLUSTER, LISTENER


class Exploding(Hooks):
    def on_push(self, stream: StreamInfo, type_url: str, version: str, names: Sequence[str],
                removed: Sequence[str], nbytes: int) -> None:
        raise RuntimeError("observer bug")


async def test_a_failing_hook_is_logged_and_the_stream_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None,
                                      hooks=[Exploding()], registry=CollectorRegistry())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}")
    client = AdsClient(channel)
    try:
        plane.cache.set_snapshot("gateway", Snapshot.build([res(LISTENER, "l1")]))
        await client.request(LISTENER)
        first = await client.recv()
        await client.ack(first)
        plane.cache.set_snapshot("gateway", Snapshot.build([res(LISTENER, "l2")]))
        assert names_of(await client.recv()) == ["l2"]
        assert any("xds hook failed" in r.message for r in caplog.records)
        assert plane.metrics.pushes.labels("LDS")._value.get() == 2  # other hooks still ran
    finally:
        client.close()
        await channel.close()
        await plane.stop(grace=None)


async def test_an_ads_request_without_type_url_ends_the_stream_with_invalid_argument() -> None:
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None,
                                      registry=CollectorRegistry())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}") as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="n", cluster="gateway")))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(call.read(), 5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "type_url" in (err.value.details() or "")
    finally:
        await plane.stop(grace=None)


async def test_a_nonce_from_a_previous_stream_counts_as_an_initial_request() -> None:
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None,
                                      registry=CollectorRegistry())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}")
    client = AdsClient(channel)
    try:
        plane.cache.set_snapshot("gateway", Snapshot.build([res(CLUSTER, "c1")]))
        await client.request(CLUSTER, version="old", nonce="17")
        assert names_of(await client.recv()) == ["c1"]
    finally:
        client.close()
        await channel.close()
        await plane.stop(grace=None)
