"""Drain before stop: knowing when no Envoy routes to an endpoint any more.

A replica that goes away (scaled down, replaced, restarted for failing its probe) is first
withdrawn from the endpoints; it may be stopped only once every Envoy connected to us has
applied an EDS update without it, or requests on their way to it fail. The xDS hooks say
which EDS version each stream was sent and which it acknowledged; the snapshots published
to each node group say what content each version is (a content hash of the group's
ClusterLoadAssignments). So this observer keeps, per node group, the EDS content of its
last snapshots by version, and per stream the version it holds (ACKed) and the one in
flight; `withdrawn(endpoints)` waits until no stream holds or is being sent any of them.

It reads hooks only (no state of the protocol code), so the xDS server can change how it
pushes. A version it cannot place (not among the recent snapshots' EDS versions, e.g. a
stream subscribed to only some of the ClusterLoadAssignments) counts as holding the
endpoint: the wait is then bounded by its timeout, never cut short.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from envoy.config.endpoint.v3 import endpoint_pb2
from routing_engine.world import BackendEndpoint
from xds_server import Hooks, Snapshot, StreamInfo, XdsResource
from xds_server.types import ENDPOINT

log = logging.getLogger("modelroute.drain")

Address = tuple[str, int]
_HISTORY = 32  # EDS versions remembered per node group (a stream is at most a few behind)


@dataclass(slots=True)
class _Stream:
    group: str
    acked: str | None = None  # the EDS version the Envoy holds
    sent: str | None = None  # the EDS version on its way to it


class EndpointDrain(Hooks):
    """Add to the control plane's hooks; `await withdrawn(endpoints, timeout=...)`."""

    def __init__(self) -> None:
        self._history: dict[str, OrderedDict[str, Mapping[str, XdsResource]]] = {}
        self._addresses: dict[tuple[str, str], frozenset[Address]] = {}  # (group, version) → endpoints
        self._streams: dict[int, _Stream] = {}
        self._waiters: set[asyncio.Future[None]] = set()

    # --- hooks -----------------------------------------------------------------------

    def on_stream_open(self, stream: StreamInfo) -> None:
        self._streams[stream.stream_id] = _Stream(stream.node_group)

    def on_stream_close(self, stream: StreamInfo) -> None:
        self._streams.pop(stream.stream_id, None)
        self._wake()

    def on_snapshot(self, node_group: str, snapshot: Snapshot) -> None:
        history = self._history.setdefault(node_group, OrderedDict())
        version = snapshot.version(ENDPOINT)
        history[version] = snapshot.of_type(ENDPOINT)
        history.move_to_end(version)
        while len(history) > _HISTORY:
            old, _ = history.popitem(last=False)
            self._addresses.pop((node_group, old), None)

    def on_push(self, stream: StreamInfo, type_url: str, version: str, names: Sequence[str],
                removed: Sequence[str], nbytes: int) -> None:
        if type_url == ENDPOINT and (view := self._streams.get(stream.stream_id)) is not None:
            view.sent = version

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        if type_url == ENDPOINT and (view := self._streams.get(stream.stream_id)) is not None:
            view.acked, view.sent = version, None
            self._wake()

    def on_resume(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str]) -> None:
        # A reconnected Envoy holds endpoints it was never sent on this stream: the
        # version it claims, then (sent nothing) the current one; "" is no version's, so
        # it counts as holding any until its next ACK.
        if type_url == ENDPOINT and (view := self._streams.get(stream.stream_id)) is not None:
            view.acked = version
            self._wake()

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
                error_message: str) -> None:
        if type_url == ENDPOINT and (view := self._streams.get(stream.stream_id)) is not None:
            view.sent = None  # the Envoy keeps what it held
            self._wake()

    # --- queries ---------------------------------------------------------------------

    def holders(self, endpoints: Collection[Address]) -> list[int]:
        """Streams whose Envoy holds, or is being sent, one of `endpoints` (or may be)."""
        wanted = frozenset(endpoints)
        found = []
        for stream_id, view in self._streams.items():
            for version in (view.acked, view.sent):
                if version is None:
                    continue
                known = self._endpoints_of(view.group, version)
                if known is None or known & wanted:
                    found.append(stream_id)
                    break
        return found

    async def withdrawn(self, endpoints: Sequence[BackendEndpoint], *, timeout: float) -> bool:
        """Wait until no Envoy holds `endpoints`; False (logged) when `timeout` ran out."""
        wanted = {(e.address, e.port) for e in endpoints if e.port is not None}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while holders := self.holders(wanted):
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                log.warning("endpoints still held by Envoy after %.1fs, stopping anyway: endpoints=%s streams=%s",
                            timeout, sorted(wanted), holders)
                return False
            finally:
                self._waiters.discard(waiter)
        return True

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _endpoints_of(self, group: str, version: str) -> frozenset[Address] | None:
        cached = self._addresses.get((group, version))
        if cached is not None:
            return cached
        history = self._history.get(group)
        resources = history.get(version) if history is not None else None
        if resources is None:
            return None
        found: set[Address] = set()
        for resource in resources.values():
            assignment = endpoint_pb2.ClusterLoadAssignment.FromString(resource.body)
            for locality in assignment.endpoints:
                for lb in locality.lb_endpoints:
                    address = lb.endpoint.address.socket_address
                    found.add((address.address, address.port_value))
        result = self._addresses[(group, version)] = frozenset(found)
        return result
