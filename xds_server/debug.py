"""Per-node record of what was sent, ACKed and NACKed, for `/debug/nodes`.

Kept by a hook rather than read from live sessions so a node that disconnected still
shows its last state (the question is usually "why did this Envoy stop updating?").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from xds_server.hooks import Hooks, StreamInfo
from xds_server.types import short_name


@dataclass(slots=True)
class TypeRecord:
    sent_version: str = ""
    sent_resources: int = 0
    sent_at: float = 0.0
    acked_version: str = ""
    acked_at: float = 0.0
    nacked_version: str = ""
    nack_error: str = ""
    nacked_at: float = 0.0


@dataclass(slots=True)
class NodeRecord:
    node_group: str
    kind: str
    streams: int = 0
    types: dict[str, TypeRecord] = field(default_factory=dict)


class DebugState(Hooks):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._nodes: dict[str, NodeRecord] = {}

    def _node(self, stream: StreamInfo) -> NodeRecord:
        record = self._nodes.get(stream.node_id)
        if record is None or record.node_group != stream.node_group:
            record = self._nodes[stream.node_id] = NodeRecord(stream.node_group, stream.kind)
        return record

    def _type(self, stream: StreamInfo, type_url: str) -> TypeRecord:
        types, key = self._node(stream).types, short_name(type_url)
        record = types.get(key)
        if record is None:  # (not setdefault: that would build a record on every push and ACK)
            record = types[key] = TypeRecord()
        return record

    def on_stream_open(self, stream: StreamInfo) -> None:
        record = self._node(stream)
        record.kind = stream.kind
        record.streams += 1

    def on_stream_close(self, stream: StreamInfo) -> None:
        self._node(stream).streams -= 1

    def on_push(self, stream: StreamInfo, type_url: str, version: str, names: Sequence[str],
                removed: Sequence[str], nbytes: int) -> None:
        record = self._type(stream, type_url)
        record.sent_version, record.sent_resources, record.sent_at = version, len(names), self._clock()

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        record = self._type(stream, type_url)
        record.acked_version, record.acked_at = version, self._clock()

    def on_resume(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str]) -> None:
        record = self._type(stream, type_url)
        record.acked_version, record.acked_at = version, self._clock()

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
                error_message: str) -> None:
        record = self._type(stream, type_url)
        record.nacked_version, record.nack_error, record.nacked_at = version, error_message, self._clock()

    def nodes(self) -> dict[str, Any]:
        """JSON-ready: node id → group, kind, connected streams and per-type state."""
        return {node_id: asdict(record) for node_id, record in sorted(self._nodes.items())}
