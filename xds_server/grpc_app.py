"""gRPC services: ADS (SotW + delta) and the per-type services for non-ADS clients.

Thin adapters from grpc.aio servicer methods onto `XdsServer`; all protocol logic is
there. The unary `Fetch*` methods (REST-style one-shot discovery) answer from the current
snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from envoy.service.listener.v3 import lds_pb2_grpc
from envoy.service.route.v3 import rds_pb2_grpc
from envoy.service.secret.v3 import sds_pb2_grpc

from xds_server.identity import peer_of
from xds_server.server import StreamError, XdsServer
from xds_server.snapshot import content_version
from xds_server.sotw import select
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, WILDCARD, WILDCARD_TYPES, short_name

DiscoveryRequests = AsyncIterator[discovery_pb2.DiscoveryRequest]
DeltaRequests = AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]
DiscoveryResponses = AsyncIterator[discovery_pb2.DiscoveryResponse]
DeltaResponses = AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]
SotwContext = grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]
DeltaContext = grpc.aio.ServicerContext[discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse]


# Requests are small (a subscription of 50,000 names of ~60 bytes is 3 MB); anything
# bigger is refused by gRPC before it is parsed.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# An Envoy uses one ADS stream (or one per type): more at once on one connection is a
# client misbehaving. Streams across connections are capped by `server.Limits`.
MAX_STREAMS_PER_CONNECTION = 100


async def _sotw(xds: XdsServer, requests: DiscoveryRequests, context: SotwContext,
                kind: str, type_url: str | None) -> DiscoveryResponses:
    try:
        async for response in xds.stream_sotw(requests, kind=kind, type_url=type_url, peer=peer_of(context)):
            yield response
    except StreamError as exc:
        await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))


async def _delta(xds: XdsServer, requests: DeltaRequests, context: DeltaContext,
                 kind: str, type_url: str | None) -> DeltaResponses:
    try:
        async for response in xds.stream_delta(requests, kind=kind, type_url=type_url, peer=peer_of(context)):
            yield response
    except StreamError as exc:
        await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))


async def _fetch(xds: XdsServer, request: discovery_pb2.DiscoveryRequest, context: SotwContext,
                 type_url: str) -> discovery_pb2.DiscoveryResponse:
    try:
        group = xds.group_of(request.node, peer_of(context))
    except StreamError as exc:
        await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
    snapshot = xds.cache.get_snapshot(group)
    if snapshot is None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "no snapshot for this node yet")
    names = set(request.resource_names)
    wildcard = type_url in WILDCARD_TYPES and (not names or WILDCARD in names)
    selected = select(snapshot.of_type(type_url), names - {WILDCARD}, wildcard)
    response = discovery_pb2.DiscoveryResponse(
        type_url=type_url, version_info=content_version((n, r.version) for n, r in selected.items()))
    response.resources.extend(snapshot.as_any(r) for r in selected.values())
    return response


# xds-protos ships no stubs (docs/decisions.md, "Types"): its generated servicer bases are Any.
class AggregatedService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, xds: XdsServer) -> None:
        self._xds = xds

    # grpc.aio recognises streaming handlers by being async generator functions.
    async def StreamAggregatedResources(self, request_iterator: DiscoveryRequests,  # noqa: N802
                                        context: SotwContext) -> DiscoveryResponses:
        async for response in _sotw(self._xds, request_iterator, context, "ads", None):
            yield response

    async def DeltaAggregatedResources(self, request_iterator: DeltaRequests,  # noqa: N802
                                       context: DeltaContext) -> DeltaResponses:
        async for response in _delta(self._xds, request_iterator, context, "ads-delta", None):
            yield response


def _single_type_servicer(base: type, stream: str, delta: str, fetch: str, type_url: str) -> type:
    """A servicer class for one resource type, e.g. LDS's StreamListeners/DeltaListeners/FetchListeners."""
    kind = short_name(type_url).lower()
    # `self` is an instance of the class built below with type(): Any to the checker.

    def __init__(self: Any, xds: XdsServer) -> None:
        self._xds = xds

    async def stream_method(self: Any, request_iterator: DiscoveryRequests, context: SotwContext) -> DiscoveryResponses:
        async for response in _sotw(self._xds, request_iterator, context, kind, type_url):
            yield response

    async def delta_method(self: Any, request_iterator: DeltaRequests, context: DeltaContext) -> DeltaResponses:
        async for response in _delta(self._xds, request_iterator, context, f"{kind}-delta", type_url):
            yield response

    async def fetch_method(self: Any, request: discovery_pb2.DiscoveryRequest,
                           context: SotwContext) -> discovery_pb2.DiscoveryResponse:
        return await _fetch(self._xds, request, context, type_url)

    return type(f"{kind.upper()}Service", (base,), {
        "__init__": __init__, stream: stream_method, delta: delta_method, fetch: fetch_method})


ListenerService = _single_type_servicer(lds_pb2_grpc.ListenerDiscoveryServiceServicer,
                                        "StreamListeners", "DeltaListeners", "FetchListeners", LISTENER)
RouteService = _single_type_servicer(rds_pb2_grpc.RouteDiscoveryServiceServicer,
                                     "StreamRoutes", "DeltaRoutes", "FetchRoutes", ROUTE)
ClusterService = _single_type_servicer(cds_pb2_grpc.ClusterDiscoveryServiceServicer,
                                       "StreamClusters", "DeltaClusters", "FetchClusters", CLUSTER)
EndpointService = _single_type_servicer(eds_pb2_grpc.EndpointDiscoveryServiceServicer,
                                        "StreamEndpoints", "DeltaEndpoints", "FetchEndpoints", ENDPOINT)
SecretService = _single_type_servicer(sds_pb2_grpc.SecretDiscoveryServiceServicer,
                                      "StreamSecrets", "DeltaSecrets", "FetchSecrets", SECRET)


def add_services(server: grpc.aio.Server, xds: XdsServer) -> None:
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedService(xds), server)
    lds_pb2_grpc.add_ListenerDiscoveryServiceServicer_to_server(ListenerService(xds), server)
    rds_pb2_grpc.add_RouteDiscoveryServiceServicer_to_server(RouteService(xds), server)
    cds_pb2_grpc.add_ClusterDiscoveryServiceServicer_to_server(ClusterService(xds), server)
    eds_pb2_grpc.add_EndpointDiscoveryServiceServicer_to_server(EndpointService(xds), server)
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(SecretService(xds), server)


async def start_grpc(xds: XdsServer, address: str = "127.0.0.1:18000",
                     credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.aio.Server, int]:
    """Start serving; returns the server and the bound port (pass port 0 to pick one).

    Keepalive settings let Envoy's and the clients' HTTP/2 pings through. With
    `credentials` (mTLS, `xds_server.tls`) peers are identified by their certificates.
    gRPC core queues calls that arrived before the server took them (it takes one at a
    time) and fails them past 1,000 waiting for a while, or 3,000 at once ("Internal
    error from Core" on the client): thousands of Envoys (re)connecting together, e.g.
    after a control-plane restart, arrive faster than that, so the queue limits are raised.
    """
    server = grpc.aio.server(options=[
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ("grpc.server.max_pending_requests", 50_000),
        ("grpc.server.max_pending_requests_hard_limit", 100_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.max_send_message_length", 256 * 1024 * 1024),
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ])
    add_services(server, xds)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    return server, port
