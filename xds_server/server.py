"""Drives protocol sessions over gRPC streams: the bridge between gRPC and the cache.

Each stream is one coroutine (the gRPC handler) that reads requests and hands each to
the session state machine; a newer snapshot (a cache watch) is handed to the session
from the event loop; responses go into the stream's outbox, which a short-lived task
writes out in order and then ends. So an idle stream holds no task and no queue of its
own (10,000 Envoys are 10,000 idle streams), a push costs one task per stream that has
something to send, and the session is driven by one thread with no locks: responses
leave in exactly the order the session produced them. A stream reads no further
request while responses wait to be written (gRPC's flow control holds a faster client
back), and a stream still writing when newer snapshots arrive gets only the newest.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from grpc.aio import EOF

from xds_server.cache import SnapshotCache
from xds_server.delta import DeltaSession
from xds_server.hooks import Hooks, HookSet, StreamInfo
from xds_server.identity import Peer, Unauthorized
from xds_server.snapshot import Snapshot
from xds_server.sotw import SotwSession


log = logging.getLogger("modelroute.xds")


class Channel(Protocol):
    """One stream's requests and responses (a grpc.aio servicer context is one)."""

    async def read(self) -> Any:
        """The next request, or `grpc.aio.EOF` once the client half-closed."""

    async def write(self, message: bytes) -> None:
        """Send one serialized response."""


# Streams handed a new snapshot per turn of the event loop (`_Fanout`).
FANOUT_BATCH = 100


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
        self._fanout = _Fanout()

    async def serve(self, channel: Channel, *, delta: bool, kind: str = "ads", type_url: str | None = None,
                    peer: Peer = Peer("")) -> None:
        """Serve one stream until the client ends it; raises StreamError for a client
        that breaks the protocol or a limit. `type_url` set: a single-type service (LDS,
        ...) that only accepts that type."""
        if self.active_streams >= self.limits.max_streams:
            raise StreamError(f"too many xDS streams (limit {self.limits.max_streams})", "RESOURCE_EXHAUSTED")
        self.active_streams += 1
        try:
            request = await channel.read()
            if request is EOF:
                return
            node_group = self.group_of(request.node, peer)
            stream = StreamInfo(next(self._stream_ids), kind, request.node.id, node_group, peer.identity)
            session_cls: type[SotwSession] | type[DeltaSession] = DeltaSession if delta else SotwSession
            session = session_cls(stream, ads=type_url is None, hooks=self.hooks, clock=self._clock,
                                  verdict=functools.partial(self.cache.report, node_group))
            current = asyncio.current_task()
            assert current is not None, "a stream is served by a task"
            outbox = _Outbox(session, channel, current, self._fanout)
            watch = self.cache.watch(node_group, outbox.on_snapshot)
            self.hooks.on_stream_open(stream)
            try:
                session.snapshot = self.cache.get_snapshot(node_group)
                while request is not EOF:
                    _check_type(request, type_url)
                    _check_limits(request, session, self.limits)
                    outbox.send(session.on_request(request))
                    request = None  # not held while the stream waits
                    if outbox.writer is not None:
                        await outbox.writer  # read no further while responses wait
                    request = await channel.read()
                if outbox.writer is not None:
                    await outbox.writer  # the client half-closed: what it was sent still goes out
            except asyncio.CancelledError:
                if outbox.write_error is not None:  # gRPC says why (the client left, the server stops)
                    raise outbox.write_error from None
                if outbox.failure is not None:  # the session failed on a snapshot
                    _log_failure(stream, outbox.failure)
                    raise outbox.failure from None
                raise
            except StreamError:
                raise
            except Exception as exc:
                _log_failure(stream, exc)
                raise
            finally:
                watch.cancel()
                outbox.close()
                self.hooks.on_stream_close(stream)
        finally:
            self.active_streams -= 1

    def group_of(self, node: base_pb2.Node, peer: Peer) -> str:
        """The node group `peer` is served as; raises StreamError(PERMISSION_DENIED)."""
        if self._authorize is None:
            return self.cache.node_group(node)
        try:
            return self._authorize(node, peer)
        except Unauthorized as err:
            raise StreamError(str(err), "PERMISSION_DENIED") from None


def _log_failure(stream: StreamInfo, exc: BaseException) -> None:
    log.error("xds stream failed", exc_info=exc, extra={"stream": stream.stream_id, "node": stream.node_id,
                                                         "node_group": stream.node_group})


class _Fanout:
    """Hands a new snapshot to the streams waiting for it, FANOUT_BATCH per turn of the
    event loop: the first streams' responses leave (and their ACKs come back) while later
    streams are still being planned. Handed to all 10,000 streams in one turn, every
    stream's writer and gRPC write would be alive at once, and the collector would
    promote them all to its oldest generation: a second full collection in one push,
    now and then (10,000 streams, 5 pushes: push CPU 1.44-2.07 s with 1-2 full
    collections each; in batches 1.58-1.69 s with one). Never waits on a stream."""

    __slots__ = ("_due", "_task")

    def __init__(self) -> None:
        self._due: collections.deque[_Outbox] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def add(self, outbox: _Outbox, loop: asyncio.AbstractEventLoop) -> None:
        self._due.append(outbox)
        if self._task is None:
            self._task = loop.create_task(self._run(), name="xds-fanout")

    async def _run(self) -> None:
        try:
            while self._due:
                for _ in range(min(FANOUT_BATCH, len(self._due))):
                    self._due.popleft().take_snapshot()  # never raises: a failure ends that stream only
                await asyncio.sleep(0)
        finally:
            self._task = None


class _Outbox:
    """One stream's responses on their way out: what the session produced, written in
    order by a task that exists only while there is something to write. Snapshots that
    arrive while it writes are coalesced: the session gets only the newest."""

    __slots__ = ("_session", "_channel", "_handler", "_fanout", "_loop", "_queued", "_newest", "writer", "failure",
                 "write_error")

    def __init__(self, session: SotwSession | DeltaSession, channel: Channel, handler: asyncio.Task[Any],
                 fanout: _Fanout) -> None:
        self._session = session
        self._channel = channel
        # The stream's task: cancelled if the session fails on a snapshot (`failure`) or a
        # write fails (`write_error`), and then raises that.
        self._handler = handler
        self._fanout = fanout
        self._loop = handler.get_loop()  # (asyncio.get_running_loop() costs a getpid() system call)
        self._queued: list[bytes] = []  # (a response or two: a list is a tenth of a deque's size)
        self._newest: Snapshot | None = None
        self.writer: asyncio.Task[None] | None = None
        self.failure: Exception | None = None
        self.write_error: Exception | None = None

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Cache watch callback. The session sees the snapshot on the stream's turn in the
        fan-out (so `set_snapshot` returns at once), or once the writer is done with what
        it has."""
        first = self._newest is None
        self._newest = snapshot
        if first and self.writer is None:
            self._fanout.add(self, self._loop)

    def take_snapshot(self) -> None:
        if self.writer is not None or self._newest is None or self.failure or self.write_error:
            return  # the writer takes it (or the stream is ending)
        snapshot, self._newest = self._newest, None
        try:
            self.send(self._session.on_snapshot(snapshot))
        except Exception as exc:  # noqa: BLE001 - re-raised by the stream's task
            self._fail(exc)

    def send(self, responses: Sequence[bytes]) -> None:
        if responses:
            self._queued.extend(responses)
            if self.writer is None:
                self.writer = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while True:
                if self._newest is not None:
                    snapshot, self._newest = self._newest, None
                    try:
                        self._queued.extend(self._session.on_snapshot(snapshot))
                    except Exception as exc:  # noqa: BLE001 - re-raised by the stream's task
                        self._fail(exc)
                        return
                if not self._queued:
                    return
                try:
                    await self._channel.write(self._queued.pop(0))
                except Exception as exc:  # noqa: BLE001 - re-raised by the stream's task
                    self._fail(exc, writing=True)
                    return
        finally:
            self.writer = None

    def _fail(self, exc: Exception, *, writing: bool = False) -> None:
        """End the stream: its task raises `exc` (only the first failure counts)."""
        if self.failure is None and self.write_error is None:
            if writing:
                self.write_error = exc
            else:
                self.failure = exc
            self._handler.cancel()

    def close(self) -> None:
        self._newest = None
        self._queued.clear()
        if self.writer is not None:
            self.writer.cancel()


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
