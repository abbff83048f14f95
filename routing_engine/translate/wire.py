"""A RouteConfiguration assembled from routes already serialized, on the wire.

Framing 10,000 routes again on every compile costs more than all the rest of an edit, so
the translator keeps each route's bytes framed as a `VirtualHost.routes` field and
concatenates them (protobuf's wire format allows a repeated message field to be written
as its elements' bytes one after another). Byte-identical to serializing the message
deterministically (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2, route_pb2
from routing_engine.translate import route
from routing_engine.translate.xds import length_delimited, serialize

_VIRTUAL_HOST_ROUTES = route_components_pb2.VirtualHost.DESCRIPTOR.fields_by_name["routes"].number
_ROUTE_CONFIG_VIRTUAL_HOSTS = route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name["virtual_hosts"].number
_ROUTE_CONFIG_HEADERS_TO_REMOVE = route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name["request_headers_to_remove"].number
_VHOST_HEAD = serialize(route_components_pb2.VirtualHost(name=route.VIRTUAL_HOST, domains=["*"]))


def framed_route(body: bytes) -> bytes:
    """A serialized Route as one `VirtualHost.routes` field on the wire."""
    return length_delimited(_VIRTUAL_HOST_ROUTES, body)


def route_config_bytes(name: str, framed: Sequence[bytes], *, remove: str | None = None) -> bytes:
    """`route.route_config_bytes` for routes already framed by `framed_route` (framing
    10,000 routes again on every compile costs more than all the rest of an edit).
    Byte-identical to it (tested). `remove`: a request header the table removes before
    forwarding (a field numbered after the virtual hosts, so appended)."""
    head = serialize(route_pb2.RouteConfiguration(name=name))
    body = head + length_delimited(_ROUTE_CONFIG_VIRTUAL_HOSTS, _VHOST_HEAD + b"".join(framed))
    if remove is not None:
        body += length_delimited(_ROUTE_CONFIG_HEADERS_TO_REMOVE, remove.encode())
    return body
