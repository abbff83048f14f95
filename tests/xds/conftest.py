"""Fixtures: a real grpc.aio xDS server on 127.0.0.1 with a recording hook."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import grpc
import pytest

from tests.xds.client import AdsClient
from xds_server.cache import Snapshot, SnapshotCache
from xds_server.grpc_app import start_grpc
from xds_server.hooks import Hooks, StreamInfo
from xds_server.server import XdsServer


class Recorder(Hooks):
    """Remembers ACK/NACK events as the status writer would see them."""

    def __init__(self) -> None:
        self.acks: list[tuple[str, str, list[str], str]] = []
        self.nacks: list[tuple[str, str, list[str], str, str]] = []

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str], latency_s: float) -> None:
        self.acks.append((stream.node_group, type_url, list(resources), version))

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str], error: str) -> None:
        self.nacks.append((stream.node_group, type_url, list(resources), error, version))


@dataclass
class Env:
    cache: SnapshotCache
    server: XdsServer
    channel: grpc.aio.Channel
    recorder: Recorder
    port: int
    clients: list[AdsClient] = field(default_factory=list)

    def set(self, *resources, group: str = "gateway") -> Snapshot:  # type: ignore[no-untyped-def]
        snapshot = Snapshot.build(resources)
        self.cache.set_snapshot(group, snapshot)
        return snapshot

    def client(self, **kwargs) -> AdsClient:  # type: ignore[no-untyped-def]
        client = AdsClient(self.channel, **kwargs)
        self.clients.append(client)
        return client


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    recorder = Recorder()
    cache = SnapshotCache()
    xds = XdsServer(cache, [recorder])
    grpc_server, port = await start_grpc(xds, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    e = Env(cache, xds, channel, recorder, port)
    try:
        yield e
    finally:
        for client in e.clients:
            client.close()
        await channel.close()
        await grpc_server.stop(grace=None)
