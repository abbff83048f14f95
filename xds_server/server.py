"""Drives protocol sessions over async streams: the bridge between gRPC and the cache.

Each stream runs one loop that takes events from a queue — requests (from a guarded
reader task) and newer snapshots (from a cache watch) — hands them to the session state
machine, and yields the responses. One consumer per stream means no locks, and responses
leave in exactly the order the session produced them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds_server.cache import SnapshotCache
from xds_server.delta import DeltaSession
from xds_server.hooks import Hooks, HookSet, StreamInfo
from xds_server.identity import Peer, Unauthorized
from xds_server.snapshot import Snapshot
from xds_server.sotw import SotwSession


log = logging.getLogger("modelroute.xds")

Req = TypeVar("Req", discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest)

_END = object()
_SNAPSHOT = object()
READ_AHEAD = 2


class StreamError(Exception):
    """The client broke the protocol (e.g. a type URL the service doesn't serve) or a limit;
    `code` is the gRPC status name the stream ends with."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one client can make the server hold (a control plane trusts no client):
    streams at once, and per stream: type URLs, subscribed names (all types together),
    name length. (gRPC itself caps the request size: `grpc_app.MAX_REQUEST_BYTES`.) A
    gateway of a 10,000-server world subscribes ~10,000 names; 8 clients asking for
    400,000 names each are refused (tests/xds/test_name_flood.py)."""

    max_streams: int = 20_000
    max_types: int = 8
    max_names: int = 50_000
    max_name_bytes: int = 1024


Authorize = Callable[[base_pb2.Node, Peer], str]
"""The node group a peer gets for a node; raises `Unauthorized` (identity.authorized_group)."""


class XdsServer:
    """The protocol layer: one instance serves every stream of every node group."""

    def __init__(self, cache: SnapshotCache, hooks: Sequence[Hooks] = (), *,
                 clock: Callable[[], float] = time.monotonic, authorize: Authorize | None = None,
                 limits: Limits = Limits()) -> None:
        self.cache = cache
        self.hooks = HookSet(hooks)
        self._clock = clock
        self._stream_ids = itertools.count(1)
        # None: the cache's node grouping, no identity needed (tests, loopback).
        self._authorize = authorize
        self.limits = limits
        self.active_streams = 0

    def stream_sotw(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest], *, kind: str = "ads",
                    type_url: str | None = None, peer: Peer = Peer("")) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """`type_url` set: a single-type service (LDS, ...) that only accepts that type."""
        return self._run(requests, kind, type_url, delta=False, peer=peer)

    def stream_delta(self, requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], *,
                     kind: str = "ads-delta", type_url: str | None = None, peer: Peer = Peer(""),
                     ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        return self._run(requests, kind, type_url, delta=True, peer=peer)

    def group_of(self, node: base_pb2.Node, peer: Peer) -> str:
        """The node group `peer` is served as; raises StreamError(PERMISSION_DENIED)."""
        if self._authorize is None:
            return self.cache.node_group(node)
        try:
            return self._authorize(node, peer)
        except Unauthorized as err:
            raise StreamError(str(err), "PERMISSION_DENIED") from None

    async def _run(self, requests: AsyncIterator[Req], kind: str, type_url: str | None, *,
                   delta: bool, peer: Peer) -> AsyncIterator[Any]:
        if self.active_streams >= self.limits.max_streams:
            raise StreamError(f"too many xDS streams (limit {self.limits.max_streams})", "RESOURCE_EXHAUSTED")
        self.active_streams += 1
        try:
            async for response in self._serve(requests, kind, type_url, delta=delta, peer=peer):
                yield response
        finally:
            self.active_streams -= 1

    async def _serve(self, requests: AsyncIterator[Req], kind: str, type_url: str | None, *,
                     delta: bool, peer: Peer) -> AsyncIterator[Any]:
        iterator = requests.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return
        node_group = self.group_of(first.node, peer)
        stream = StreamInfo(next(self._stream_ids), kind, first.node.id, node_group, peer.identity)
        nonce_counter = itertools.count(1)
        session_cls: type[SotwSession] | type[DeltaSession] = DeltaSession if delta else SotwSession
        session = session_cls(stream, ads=type_url is None, hooks=self.hooks, clock=self._clock,
                              nonces=lambda: str(next(nonce_counter)),
                              verdict=lambda snapshot, accepted: self.cache.report(node_group, snapshot, accepted))
        queue: asyncio.Queue[object] = asyncio.Queue()
        # Snapshots are coalesced: a slow client gets only the newest, and the queue
        # never holds more than one snapshot marker.
        newest: list[Snapshot | None] = [None]

        def on_snapshot(snapshot: Snapshot) -> None:
            if newest[0] is None:
                queue.put_nowait(_SNAPSHOT)
            newest[0] = snapshot

        watch = self.cache.watch(node_group, on_snapshot)
        # At most READ_AHEAD requests are read before the loop took them: a client sending
        # faster than it is served is held back by gRPC's flow control, not buffered here.
        read_ahead = asyncio.Semaphore(READ_AHEAD)
        reader = asyncio.create_task(_read(iterator, queue, read_ahead), name=f"xds-reader-{stream.stream_id}")
        self.hooks.on_stream_open(stream)
        try:
            session.snapshot = self.cache.get_snapshot(node_group)
            event: object = first
            while True:
                if event is _SNAPSHOT:
                    snapshot, newest[0] = newest[0], None
                    responses = session.on_snapshot(snapshot)
                elif isinstance(event, BaseException):
                    raise event
                elif event is _END:
                    return
                else:
                    read_ahead.release()
                    _check_type(event, type_url)
                    _check_limits(event, session, self.limits)
                    responses = session.on_request(event)
                for response in responses:
                    yield response
                event = await queue.get()
        except (StreamError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            log.exception("xds stream failed", extra={"stream": stream.stream_id, "node": stream.node_id,
                                                      "node_group": node_group})
            raise
        finally:
            watch.cancel()
            reader.cancel()
            self.hooks.on_stream_close(stream)


def _check_type(request: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest,
                type_url: str | None) -> None:
    if type_url is None:
        if not request.type_url:
            raise StreamError("ADS request without type_url")
        return
    if not request.type_url:
        request.type_url = type_url
    elif request.type_url != type_url:
        raise StreamError(f"this service serves {type_url}, not {request.type_url}")


def _check_limits(request: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest,
                  session: SotwSession | DeltaSession, limits: Limits) -> None:
    """Refuse a request that would make this stream hold more than `limits` allow."""
    if request.type_url not in session.types and len(session.types) >= limits.max_types:
        raise StreamError(f"too many resource types on one stream (limit {limits.max_types})", "RESOURCE_EXHAUSTED")
    held = sum(session.name_count(t) for t in session.types)
    if isinstance(request, discovery_pb2.DeltaDiscoveryRequest):
        names = request.resource_names_subscribe
    else:
        names = request.resource_names  # SotW: the type's whole subscription every time
        held -= session.name_count(request.type_url)
    if held + len(names) > limits.max_names:
        raise StreamError(f"too many resource names on one stream (limit {limits.max_names})", "RESOURCE_EXHAUSTED")
    longest = max((len(n) for n in names), default=0)
    if longest > limits.max_name_bytes:
        raise StreamError(f"a resource name of {longest} characters (limit {limits.max_name_bytes})",
                          "INVALID_ARGUMENT")


async def _read(iterator: AsyncIterator[object], queue: asyncio.Queue[object], read_ahead: asyncio.Semaphore) -> None:
    """Forward requests; end-of-stream and errors also go through the queue so the stream
    loop sees them — nothing is lost in a background task."""
    try:
        while True:
            await read_ahead.acquire()  # released by the loop as it takes each request
            try:
                request = await iterator.__anext__()
            except StopAsyncIteration:
                break
            queue.put_nowait(request)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - re-raised by the stream loop
        queue.put_nowait(exc)
        return
    queue.put_nowait(_END)
