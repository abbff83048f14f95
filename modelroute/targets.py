"""Which snapshot an Envoy gets: node metadata → node group → engine `Target` (SPEC 3.6).

Each Envoy states its role in its bootstrap node metadata (`role: gateway|sidecar`) and a
sidecar may narrow its scope (`namespaces: "a,b"`, `servers: "ns/name,..."`). Envoys with
the same role and scope share one node group, hence one compile and one snapshot, however
many of them connect. The group name is canonical (sorted scope) so that equal scopes
written differently still share.

The xDS server only sees the group string (`node_group`); the wiring turns it back into a
`Target` (`target_for_group`) to compile for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from routing_engine.api.resources import ObjectKey
from routing_engine.world import Target

GATEWAY = "gateway"


@dataclass(frozen=True, slots=True)
class Placement:
    """How this process places listeners: the same for every group it serves."""

    listen_address: str | None = None  # gateways; sidecars always bind 127.0.0.1
    privileged_port_offset: int = 0


def _field(metadata: struct_pb2.Struct, key: str) -> str:
    value = metadata.fields.get(key)
    if value is None:
        return ""
    if value.HasField("string_value"):
        return value.string_value
    if value.HasField("list_value"):
        return ",".join(v.string_value for v in value.list_value.values if v.HasField("string_value"))
    return ""


def _items(text: str) -> list[str]:
    return sorted({item.strip() for item in text.split(",") if item.strip()})


def node_group(node: base_pb2.Node) -> str:
    """`gateway`, `sidecar`, or `sidecar;namespaces=a,b;servers=ns/x` (canonical)."""
    role = _field(node.metadata, "role") or GATEWAY
    if role != "sidecar":
        return GATEWAY
    parts = ["sidecar"]
    for key in ("namespaces", "servers"):
        items = _items(_field(node.metadata, key))
        if items:
            parts.append(f"{key}={','.join(items)}")
    return ";".join(parts)


def target_for_group(group: str, placement: Placement) -> Target:
    role, *scopes = group.split(";")
    if role != "sidecar":
        return Target(role="gateway", listen_address=placement.listen_address,
                      privileged_port_offset=placement.privileged_port_offset)
    namespaces: frozenset[str] | None = None
    servers: frozenset[ObjectKey] | None = None
    for scope in scopes:
        key, _, value = scope.partition("=")
        if key == "namespaces":
            namespaces = frozenset(_items(value))
        elif key == "servers":
            refs = []
            for item in _items(value):
                namespace, _, name = item.rpartition("/")
                refs.append(ObjectKey("ModelServer", namespace or "default", name))
            servers = frozenset(refs)
    return Target(role="sidecar", privileged_port_offset=placement.privileged_port_offset,
                  namespaces=namespaces, servers=servers)
