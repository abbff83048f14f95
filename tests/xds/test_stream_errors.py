"""Streams fail cleanly on protocol violations, and a failing observer never breaks one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client import CollectorRegistry

from tests.xds.client import AdsClient, names_of, res, until
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


class Unreadable:
    """A resource whose body cannot be read: the push that would carry it fails."""

    type_url = LISTENER
    name = "broken"
    version = "v1"

    @property
    def body(self) -> bytes:
        raise RuntimeError("resource bug")


async def test_a_push_that_fails_ends_the_stream_with_an_error_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A snapshot reaches a stream outside its request loop (a cache watch); a failure
    there must end that stream with an error the client sees, never leave it hanging."""
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None, registry=CollectorRegistry())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}")
    client = AdsClient(channel)
    try:
        plane.cache.set_snapshot("gateway", Snapshot.build([res(LISTENER, "l1")]))
        await client.request(LISTENER)
        await client.ack(await client.recv())
        plane.cache.set_snapshot("gateway", Snapshot.build([Unreadable()]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.recv()
        assert err.value.code() == grpc.StatusCode.UNKNOWN
        assert "resource bug" in (err.value.details() or "")
        assert any(r.message == "xds stream failed" for r in caplog.records)
        await until(lambda: plane.server.active_streams == 0, what="the stream to be closed")
    finally:
        client.close()
        await channel.close()
        await plane.stop(grace=None)


async def test_a_client_that_half_closes_gets_what_it_asked_for_and_the_stream_ends_ok() -> None:
    plane = await start_control_plane(xds_address="127.0.0.1:0", admin_host=None, registry=CollectorRegistry())
    try:
        plane.cache.set_snapshot("gateway", Snapshot.build([res(CLUSTER, "c1")]))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}") as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="n", cluster="gateway"),
                                                            type_url=CLUSTER))
            await call.done_writing()
            response = await asyncio.wait_for(call.read(), 5)
            assert names_of(response) == ["c1"]
            assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await plane.stop(grace=None)
