"""A small Python xDS client for protocol tests: one ADS stream, SotW or delta."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2


@dataclass(frozen=True, slots=True)
class Res:
    """Test double for the engine's EnvoyResource: version is the hash of the body."""

    type_url: str
    name: str
    body: bytes

    @property
    def version(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:12]


def res(type_url: str, name: str, content: str = "v1") -> Res:
    return Res(type_url, name, f"{name}:{content}".encode())


class AdsClient:
    """Wraps a grpc.aio bidirectional call; `recv` fails the test after a timeout."""

    def __init__(self, channel: grpc.aio.Channel, *, node_id: str = "envoy-1", cluster: str = "gateway",
                 delta: bool = False) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.delta = delta
        self.call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self._sent_node = False
        # Cancelling a pending call.read() cancels the whole RPC, so a task reads
        # continuously and tests wait on this queue instead.
        self._responses: asyncio.Queue[object] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                response = await self.call.read()
                self._responses.put_nowait(response)
                if response is grpc.aio.EOF:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the test through recv()
            self._responses.put_nowait(exc)

    def _node(self) -> base_pb2.Node | None:
        if self._sent_node:
            return None
        self._sent_node = True
        return self.node

    async def request(self, type_url: str, names: Iterable[str] = (), *, version: str = "", nonce: str = "",
                      error: str | None = None) -> None:
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                             response_nonce=nonce)
        node = self._node()
        if node is not None:
            req.node.CopyFrom(node)
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(req)

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        await self.request(response.type_url, names, version=response.version_info, nonce=response.nonce)

    async def nack(self, response: discovery_pb2.DiscoveryResponse, names: Iterable[str] = (), *,
                   version: str = "", error: str = "rejected") -> None:
        await self.request(response.type_url, names, version=version, nonce=response.nonce, error=error)

    async def delta_request(self, type_url: str, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (), *,
                            nonce: str = "", initial: dict[str, str] | None = None, error: str | None = None) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(subscribe),
                                                  resource_names_unsubscribe=list(unsubscribe),
                                                  response_nonce=nonce, initial_resource_versions=initial or {})
        node = self._node()
        if node is not None:
            req.node.CopyFrom(node)
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(req)

    async def recv(self, timeout: float = 3.0):  # type: ignore[no-untyped-def]
        response = await asyncio.wait_for(self._responses.get(), timeout)
        if isinstance(response, BaseException):
            raise response
        assert response is not grpc.aio.EOF, "stream ended"
        return response

    async def expect_silence(self, seconds: float = 0.3) -> None:
        """Assert that the server sends nothing for `seconds`."""
        try:
            response = await asyncio.wait_for(self._responses.get(), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected response: {response}")

    def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()


async def until(predicate: Callable[[], bool], *, timeout: float = 3.0, what: str = "condition") -> None:
    """Wait for server-side effects (hooks run after the request is read) without sleeping blindly."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def names_of(response) -> list[str]:  # type: ignore[no-untyped-def]
    """Resource names in a SotW response (the test resources' bodies start with `name:`)."""
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    return [any_.value.decode().split(":", 1)[0] for any_ in response.resources]


def contents_of(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        values = [r.resource.value for r in response.resources]
    else:
        values = [a.value for a in response.resources]
    return dict(v.decode().split(":", 1) for v in values)
