"""gRPC services: ADS (SotW + delta) and the per-type services for non-ADS clients.

Thin adapters from grpc.aio method handlers onto `XdsServer`; all protocol logic is
there. Streams use grpc.aio's reader/writer API (a coroutine per stream, no response
generator) and write responses the sessions serialized (so the handlers have no
response serializer). The unary `Fetch*` methods (REST-style one-shot discovery)
answer from the current snapshot.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from envoy.service.cluster.v3 import cds_pb2
from envoy.service.discovery.v3 import ads_pb2, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2
from envoy.service.listener.v3 import lds_pb2
from envoy.service.route.v3 import rds_pb2
from envoy.service.secret.v3 import sds_pb2
from google.protobuf.descriptor import ServiceDescriptor

from xds_server.identity import peer_of
from xds_server.server import StreamError, XdsServer
from xds_server.snapshot import content_version
from xds_server.sotw import select
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, WILDCARD, WILDCARD_TYPES, short_name

SotwContext = grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, bytes]


# Requests are small (a subscription of 50,000 names of ~60 bytes is 3 MB); anything
# bigger is refused by gRPC before it is parsed.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# An Envoy uses one ADS stream (or one per type): more at once on one connection is a
# client misbehaving. Streams across connections are capped by `server.Limits`.
MAX_STREAMS_PER_CONNECTION = 100


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


def _stream_handler(xds: XdsServer, *, delta: bool, kind: str, type_url: str | None) -> grpc.RpcMethodHandler[Any, Any]:
    # grpc.aio runs a coroutine function (not an async generator) with the reader/writer
    # API; the request iterator it passes is not used (the server reads `context`).
    async def handle(requests: Any, context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        try:
            await xds.serve(context, delta=delta, kind=kind, type_url=type_url, peer=peer_of(context))
        except StreamError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.code), str(exc))

    request = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
    return grpc.stream_stream_rpc_method_handler(handle, request_deserializer=request.FromString)


def _fetch_handler(xds: XdsServer, type_url: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def handle(request: discovery_pb2.DiscoveryRequest, context: SotwContext) -> discovery_pb2.DiscoveryResponse:
        return await _fetch(xds, request, context, type_url)

    return grpc.unary_unary_rpc_method_handler(handle, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                                               response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString)


Handlers: TypeAlias = "dict[str, grpc.RpcMethodHandler[Any, Any]]"  # (not subscriptable at run time)


def _add(server: grpc.aio.Server, service: ServiceDescriptor, handlers: Handlers) -> None:
    """Register `handlers` as every method of `service` (its full name, e.g.
    envoy.service.listener.v3.ListenerDiscoveryService, from the descriptor)."""
    assert set(handlers) == set(service.methods_by_name), f"{service.full_name}: {sorted(service.methods_by_name)}"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


# The per-type services: each has Stream*, Delta* and Fetch* methods for one type.
_SINGLE_TYPE_SERVICES: tuple[tuple[ServiceDescriptor, str], ...] = (
    (lds_pb2.DESCRIPTOR.services_by_name["ListenerDiscoveryService"], LISTENER),
    (rds_pb2.DESCRIPTOR.services_by_name["RouteDiscoveryService"], ROUTE),
    (cds_pb2.DESCRIPTOR.services_by_name["ClusterDiscoveryService"], CLUSTER),
    (eds_pb2.DESCRIPTOR.services_by_name["EndpointDiscoveryService"], ENDPOINT),
    (sds_pb2.DESCRIPTOR.services_by_name["SecretDiscoveryService"], SECRET),
)


def add_services(server: grpc.aio.Server, xds: XdsServer) -> None:
    _add(server, ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"], {
        "StreamAggregatedResources": _stream_handler(xds, delta=False, kind="ads", type_url=None),
        "DeltaAggregatedResources": _stream_handler(xds, delta=True, kind="ads-delta", type_url=None)})
    for service, type_url in _SINGLE_TYPE_SERVICES:
        kind = short_name(type_url).lower()
        handlers: Handlers = {}
        for method in service.methods:  # e.g. StreamListeners, DeltaListeners, FetchListeners
            if method.name.startswith("Fetch"):
                handlers[method.name] = _fetch_handler(xds, type_url)
            else:
                delta = method.name.startswith("Delta")
                handlers[method.name] = _stream_handler(xds, delta=delta, kind=f"{kind}-delta" if delta else kind,
                                                        type_url=type_url)
        _add(server, service, handlers)


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
