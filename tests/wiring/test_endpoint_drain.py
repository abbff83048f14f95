"""The drain observer, fed the xDS hooks directly: an endpoint is withdrawn once every
stream acknowledged an EDS version without it; in flight or unknown versions hold it."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from envoy.config.endpoint.v3 import endpoint_pb2
from modelroute.endpoint_drain import EndpointDrain
from routing_engine.world import BackendEndpoint
from xds_server import Snapshot, StreamInfo
from xds_server.types import ENDPOINT

A, B = BackendEndpoint("127.0.0.1", 4001), BackendEndpoint("127.0.0.1", 4002)


@dataclass(frozen=True)
class Resource:
    type_url: str
    name: str
    body: bytes
    version: str


def assignment(name: str, *endpoints: BackendEndpoint) -> Resource:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    locality = cla.endpoints.add()
    for e in endpoints:
        address = locality.lb_endpoints.add().endpoint.address.socket_address
        address.address, address.port_value = e.address, e.port or 0
    body = cla.SerializeToString(deterministic=True)
    return Resource(ENDPOINT, name, body, hashlib.sha256(body).hexdigest()[:16])


def snapshot(*endpoints: BackendEndpoint) -> Snapshot:
    return Snapshot.build([assignment("modelserver/default/s", *endpoints), assignment("modelserver/default/o")])


GATEWAY = StreamInfo(1, "ads", "gw", "gateway")
OTHER = StreamInfo(2, "ads-delta", "gw2", "gateway")


def deliver(drain: EndpointDrain, stream: StreamInfo, snap: Snapshot, *, ack: bool = True) -> None:
    version = snap.version(ENDPOINT)
    drain.on_push(stream, ENDPOINT, version, ["modelserver/default/s"], (), 100)
    if ack:
        drain.on_ack(stream, ENDPOINT, version, ["modelserver/default/s"], 0.01)


async def test_withdrawn_once_every_stream_acked_a_version_without_it() -> None:
    drain = EndpointDrain()
    both, only_a = snapshot(A, B), snapshot(A)
    for stream in (GATEWAY, OTHER):
        drain.on_stream_open(stream)
    drain.on_snapshot("gateway", both)
    deliver(drain, GATEWAY, both)
    deliver(drain, OTHER, both)
    waiting = asyncio.ensure_future(drain.withdrawn([B], timeout=5))
    await asyncio.sleep(0.05)
    drain.on_snapshot("gateway", only_a)
    deliver(drain, GATEWAY, only_a, ack=False)  # sent, not acknowledged yet
    await asyncio.sleep(0.05)
    assert not waiting.done() and drain.holders({("127.0.0.1", 4002)}) == [1, 2]
    drain.on_ack(GATEWAY, ENDPOINT, only_a.version(ENDPOINT), [], 0.01)
    deliver(drain, OTHER, only_a)
    assert await asyncio.wait_for(waiting, 1) is True
    assert drain.holders({("127.0.0.1", 4001)}) == [1, 2]  # A was never withdrawn


async def test_a_version_being_sent_that_has_it_again_holds_it() -> None:
    drain = EndpointDrain()
    drain.on_stream_open(GATEWAY)
    without, back = snapshot(A), snapshot(A, B)
    for snap in (without, back):
        drain.on_snapshot("gateway", snap)
    deliver(drain, GATEWAY, without)
    deliver(drain, GATEWAY, back, ack=False)
    assert drain.holders({("127.0.0.1", 4002)}) == [1]
    drain.on_nack(GATEWAY, ENDPOINT, back.version(ENDPOINT), [], "rejected")
    assert drain.holders({("127.0.0.1", 4002)}) == []


async def test_an_unknown_version_holds_until_the_timeout_and_a_closed_stream_holds_nothing() -> None:
    drain = EndpointDrain()
    drain.on_stream_open(GATEWAY)
    drain.on_stream_open(OTHER)  # never sent any EDS: holds nothing
    drain.on_snapshot("gateway", snapshot(A))
    drain.on_ack(GATEWAY, ENDPOINT, "a-version-never-published", [], 0.01)
    assert await drain.withdrawn([B], timeout=0.2) is False
    waiting = asyncio.ensure_future(drain.withdrawn([B], timeout=5))
    await asyncio.sleep(0.05)
    drain.on_stream_close(GATEWAY)
    assert await asyncio.wait_for(waiting, 1) is True


async def test_a_reconnected_envoy_sent_nothing_holds_what_it_resumed_with() -> None:
    """After a control-plane restart the Envoys are sent nothing (they hold the
    snapshot): the version they resumed with is what they hold, so withdrawing an
    endpoint waits for their next ACK; a partial resume ("") holds anything."""
    drain = EndpointDrain()
    both, only_a = snapshot(A, B), snapshot(A)
    for stream in (GATEWAY, OTHER):
        drain.on_stream_open(stream)
    drain.on_snapshot("gateway", both)
    drain.on_resume(GATEWAY, ENDPOINT, both.version(ENDPOINT), {})
    drain.on_resume(OTHER, ENDPOINT, "", {})
    assert drain.holders({("127.0.0.1", 4002)}) == [1, 2]
    drain.on_snapshot("gateway", only_a)
    deliver(drain, GATEWAY, only_a)
    deliver(drain, OTHER, only_a)
    assert drain.holders({("127.0.0.1", 4002)}) == []


async def test_an_envoy_reconnecting_with_older_endpoints_holds_them_until_it_acks() -> None:
    """The drain fed by a real protocol session: an Envoy reconnects still holding an
    endpoint withdrawn since (it never ACKed the withdrawal) and is sent the newer
    assignment; until it ACKs, it holds the old one (SotW and delta)."""
    from envoy.service.discovery.v3 import discovery_pb2
    from xds_server.delta import DeltaSession
    from xds_server.sotw import SotwSession

    name = "modelserver/default/s"
    both, only_a = Snapshot.build([assignment(name, A, B)]), Snapshot.build([assignment(name, A)])
    for delta in (False, True):
        drain = EndpointDrain()
        drain.on_snapshot("gateway", both)
        drain.on_snapshot("gateway", only_a)
        stream = StreamInfo(7, "ads-delta" if delta else "ads", "gw", "gateway")
        drain.on_stream_open(stream)
        session = (DeltaSession if delta else SotwSession)(stream, ads=True, hooks=drain, clock=lambda: 0.0)
        session.on_snapshot(only_a)
        old = both.of_type(ENDPOINT)[name]
        if delta:
            request: object = discovery_pb2.DeltaDiscoveryRequest(
                type_url=ENDPOINT, resource_names_subscribe=[name], initial_resource_versions={name: old.version})
        else:
            request = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=[name],
                                                     version_info=both.subset(ENDPOINT, frozenset([name]))[1])
        [response] = session.on_request(request)  # type: ignore[arg-type]
        assert drain.holders({("127.0.0.1", 4002)}) == [7], delta
        nonce = (discovery_pb2.DeltaDiscoveryResponse if delta else discovery_pb2.DiscoveryResponse).FromString(
            response).nonce
        ack: object = (discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, response_nonce=nonce) if delta else
                       discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=[name], response_nonce=nonce))
        session.on_request(ack)  # type: ignore[arg-type]
        assert drain.holders({("127.0.0.1", 4002)}) == [], delta
