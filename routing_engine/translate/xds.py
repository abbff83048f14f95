"""Small proto helpers every translate module shares: type URLs (`kit.type_urls`),
deterministic `Any` packing, the ADS config source, durations, and wire-level field
encoding.

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

from envoy.config.core.v3 import config_source_pb2

from kit.type_urls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE, SECRET, type_url

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "SCOPED_ROUTE", "SECRET", "TYPE_ORDER", "ads",
           "length_delimited", "millis", "pack", "serialize", "type_url"]

TYPE_ORDER = PUSH_ORDER  # the engine outputs resources in the order ADS applies them


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
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_ONE_BYTE = tuple(bytes((v,)) for v in range(0x80))


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field (message, string, bytes) as it appears on the wire."""
    tag, size = (field_number << 3) | 2, len(payload)
    if tag < 0x80 and size < 0x80:  # most fields: one byte each
        return bytes((tag, size)) + payload
    return _varint(tag) + _varint(size) + payload
