"""Small proto helpers every translate module shares: type URLs (derived from the
protos, as `xds_server.types` derives its own), deterministic `Any` packing, the ADS
config source, durations, and wire-level field encoding.

Why wire-level encoding: a RouteConfiguration with 10,000 routes is re-serialized on
every edit of any one of them. Protobuf's wire format lets a repeated message field be
written as the concatenation of its already-serialized elements, so the route driver
keeps each route's bytes in the translator's cache and only concatenates them
(`length_delimited`). Tests check the result is byte-identical to serializing the whole
message with `deterministic=True`.
"""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2


def type_url(message: type[Message]) -> str:
    """The type URL of a proto message class (as `Any.Pack` writes it): derived from the
    protos, never written by hand."""
    return "type.googleapis.com/" + message.DESCRIPTOR.full_name


LISTENER = type_url(listener_pb2.Listener)
ROUTE = type_url(route_pb2.RouteConfiguration)
SCOPED_ROUTE = type_url(scoped_route_pb2.ScopedRouteConfiguration)
CLUSTER = type_url(cluster_pb2.Cluster)
ENDPOINT = type_url(endpoint_pb2.ClusterLoadAssignment)
SECRET = type_url(secret_pb2.Secret)

# Output order of the resource types (the order ADS wants them applied in).
TYPE_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET)


def pack(message: Message) -> any_pb2.Any:
    """`Any.Pack` is not deterministic by default (map fields inside the packed message
    could change order between runs): always pack deterministically."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def serialize(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def ads() -> config_source_pb2.ConfigSource:
    """Every dynamic resource comes over the one ADS stream, xDS v3."""
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    source.ads.SetInParent()
    return source


def millis(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field (message, string, bytes) as it appears on the wire."""
    return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload
