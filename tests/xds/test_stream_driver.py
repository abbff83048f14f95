"""The stream driver (`XdsServer.serve`) over a channel that is not gRPC: how a stream
ends when writing a response fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from grpc.aio import EOF

from tests.xds.client import res
from xds_server.cache import Snapshot, SnapshotCache
from xds_server.server import XdsServer
from xds_server.types import CLUSTER


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
