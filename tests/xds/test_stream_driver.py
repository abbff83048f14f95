"""The stream driver (`XdsServer.serve`) over channels that are not gRPC: how a stream
ends when writing a response fails, and a snapshot handed out in batches reaching all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from grpc.aio import EOF

from tests.xds.client import contents_of, res, until
from xds_server.cache import Snapshot, SnapshotCache
from xds_server.server import FANOUT_BATCH, XdsServer
from xds_server.types import CLUSTER, ROUTE


class BrokenPipe:
    """Hands out the requests it was given, then waits; every write fails."""

    def __init__(self, *requests: discovery_pb2.DiscoveryRequest) -> None:
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        for request in requests:
            self.requests.put_nowait(request)
        self.writes = 0

    async def read(self) -> Any:
        return await self.requests.get()

    async def write(self, message: bytes) -> None:
        self.writes += 1
        raise ConnectionResetError("the client went away")


async def test_a_failed_write_ends_the_stream_with_that_error_and_no_failure_log(
        caplog: pytest.LogCaptureFixture) -> None:
    cache = SnapshotCache()
    cache.set_snapshot("gateway", Snapshot.build([res(CLUSTER, "c1")]))
    server = XdsServer(cache)
    channel = BrokenPipe(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="n", cluster="gateway"),
                                                        type_url=CLUSTER))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(server.serve(channel, delta=False), 5)
    assert channel.writes == 1
    assert server.active_streams == 0
    assert not [r for r in caplog.records if r.message == "xds stream failed"]  # gRPC reports transport errors


async def test_a_failed_write_of_a_push_ends_a_waiting_stream() -> None:
    cache = SnapshotCache()
    server = XdsServer(cache)
    channel = BrokenPipe(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="n", cluster="gateway"),
                                                        type_url=CLUSTER))
    serving = asyncio.create_task(server.serve(channel, delta=False))
    await asyncio.sleep(0.05)  # no snapshot yet: the stream waits for a request
    assert not serving.done()
    cache.set_snapshot("gateway", Snapshot.build([res(CLUSTER, "c1")]))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(serving, 5)
    assert server.active_streams == 0


async def test_a_client_that_ends_its_stream_before_asking_anything_is_not_served() -> None:
    server = XdsServer(SnapshotCache())
    channel = BrokenPipe()
    channel.requests.put_nowait(EOF)
    await asyncio.wait_for(server.serve(channel, delta=False), 5)
    assert channel.writes == 0 and server.active_streams == 0


class Envoyish:
    """ACKs every response it is sent, like a client that accepts everything."""

    def __init__(self, first: discovery_pb2.DiscoveryRequest) -> None:
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.requests.put_nowait(first)
        self.received: list[discovery_pb2.DiscoveryResponse] = []

    async def read(self) -> Any:
        return await self.requests.get()

    async def write(self, message: bytes) -> None:
        response = discovery_pb2.DiscoveryResponse.FromString(message)
        self.received.append(response)
        self.requests.put_nowait(discovery_pb2.DiscoveryRequest(
            type_url=response.type_url, resource_names=["r"], version_info=response.version_info,
            response_nonce=response.nonce))


async def test_a_snapshot_reaches_every_stream_when_more_wait_than_one_fanout_batch() -> None:
    cache = SnapshotCache()
    cache.set_snapshot("gateway", Snapshot.build([res(ROUTE, "r", "v1")]))
    server = XdsServer(cache)
    clients = [Envoyish(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=f"n{i}", cluster="gateway"),
                                                       type_url=ROUTE, resource_names=["r"]))
               for i in range(FANOUT_BATCH * 2 + 50)]
    streams = [asyncio.create_task(server.serve(client, delta=False)) for client in clients]
    try:
        await until(lambda: all(len(c.received) == 1 for c in clients), what="every initial response")
        cache.set_snapshot("gateway", Snapshot.build([res(ROUTE, "r", "v2")]))
        await until(lambda: all(len(c.received) == 2 for c in clients), what="every stream to get the change")
        assert {contents_of(c.received[1])["r"] for c in clients} == {"v2"}
    finally:
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
