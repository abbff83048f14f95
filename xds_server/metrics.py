"""Prometheus metrics for the xDS server, fed only through `Hooks` events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from xds_server.hooks import Hooks, StreamInfo
from xds_server.snapshot import Snapshot
from xds_server.types import short_name

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class XdsMetrics(Hooks):
    """`registry` defaults to the process registry; tests pass their own to stay isolated."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        self.connected_streams = Gauge("modelroute_xds_connected_streams", "Open xDS streams",
                                       ["kind"], registry=reg)
        self.pushes = Counter("modelroute_xds_pushes_total", "xDS responses sent", ["type"], registry=reg)
        self.push_bytes = Counter("modelroute_xds_push_bytes_total", "Serialized bytes of xDS responses sent",
                                  ["type"], registry=reg)
        self.acks = Counter("modelroute_xds_acks_total", "xDS responses ACKed", ["type"], registry=reg)
        self.ack_latency = Histogram("modelroute_xds_ack_latency_seconds", "Time from push to ACK/NACK",
                                     ["type"], buckets=_LATENCY_BUCKETS, registry=reg)
        self.nacks = Counter("modelroute_xds_nacks_total", "xDS responses rejected by the client", ["type"],
                             registry=reg)
        self._children: dict[tuple[int, str], Any] = {}
        self.snapshot_build = Histogram("modelroute_xds_snapshot_build_seconds",
                                        "Time to build a snapshot from resources", buckets=_LATENCY_BUCKETS,
                                        registry=reg)

    def _child(self, metric: Any, type_url: str) -> Any:
        """`metric.labels(short_name(type_url))`, looked up once: with 10,000 streams a push
        means 10,000 pushes and ACKs, and each `labels()` call takes a lock and builds a key."""
        key = (id(metric), type_url)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(short_name(type_url))
        return child

    def on_stream_open(self, stream: StreamInfo) -> None:
        self.connected_streams.labels(stream.kind).inc()

    def on_stream_close(self, stream: StreamInfo) -> None:
        self.connected_streams.labels(stream.kind).dec()

    def on_push(self, stream: StreamInfo, type_url: str, version: str, names: Sequence[str],
                removed: Sequence[str], nbytes: int) -> None:
        self._child(self.pushes, type_url).inc()
        self._child(self.push_bytes, type_url).inc(nbytes)

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        self._child(self.acks, type_url).inc()
        self._child(self.ack_latency, type_url).observe(latency_s)

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
                error_message: str) -> None:
        self.nacks.labels(short_name(type_url)).inc()

    def on_snapshot(self, node_group: str, snapshot: Snapshot) -> None:
        self.snapshot_build.observe(snapshot.build_seconds)
