"""Per-variant traffic from every Envoy: a statsd listener the Envoys push to.

Each Envoy bootstrap rendered with `xds_server.bootstrap.StatsSink` sends its stats over
UDP to this listener: counters as deltas every flush interval
(`envoy.cluster.<cluster>.upstream_rq_5xx:3|c`) and every latency sample as it is
recorded (`envoy.cluster.<cluster>.upstream_rq_time:12|ms`). Deltas make aggregation
across Envoys a plain sum (no per-Envoy baselines, no reset after an Envoy restart), and
per-request latencies give exact percentiles. Why push and not scrape `/stats`: every
Envoy that was rendered with the sink reports, wherever it runs, without the control plane
knowing its admin address (and xds-protos has no metrics-service stubs for the gRPC push).

Backend clusters report under a dot-free stat name (`routing_engine.names.stat_name`:
`llama.canary` → `llama_canary`), so the cluster is everything before the first "." and a
sub-scope Envoy adds (`<cluster>.external.upstream_rq_2xx`, the same requests again) is
never mistaken for a cluster whose name ends in `.external`, `.internal` or `.canary`.

What is kept: per destination cluster (`modelserver/<ns>/<name>`) and per quarter second
of arrival, the responses by class (2xx/3xx/4xx/5xx) and the latency samples. `window()`
sums any time range still retained (the canary analysis asks for its interval; the A/B
report for the rollout so far). Attribution is by arrival time, so a window is accurate
to one flush interval.

In a cluster the gateways reach the control plane by a Service name, and Envoy's UDP
statsd sink takes only an IP address; there they use the TCP statsd sink (same lines,
over a connection through a cluster that resolves the name): `StatsTcpListener`.

Before: Envoys (UDP or TCP). After: the canary runner and the A/B report.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from routing_engine.names import stat_name

log = logging.getLogger(__name__)

_PREFIX = "envoy.cluster."
_CLASSES = {"upstream_rq_2xx": "2xx", "upstream_rq_3xx": "3xx", "upstream_rq_4xx": "4xx",
            "upstream_rq_5xx": "5xx"}
_LATENCY = "upstream_rq_time"
RESOLUTION_S = 0.25  # arrival-time buckets: windows are exact to this (and the flush interval)


@dataclass(frozen=True, slots=True)
class VariantWindow:
    """One destination cluster's responses over a time window."""

    cluster: str
    responses: tuple[tuple[str, int], ...] = ()  # (class, count), classes 2xx..5xx
    latencies_ms: tuple[float, ...] = ()

    def count(self, klass: str) -> int:
        return dict(self.responses).get(klass, 0)

    @property
    def requests(self) -> int:
        return sum(n for _, n in self.responses)

    @property
    def errors(self) -> int:
        """Server errors (5xx): what the success rate of SPEC 3.4 counts as failures."""
        return self.count("5xx")

    @property
    def success_rate(self) -> float | None:
        """Non-5xx share in percent, None without requests."""
        return None if self.requests == 0 else 100.0 * (self.requests - self.errors) / self.requests


@dataclass(slots=True)
class _Bucket:
    responses: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


def parse_line(line: str) -> tuple[str, str, float] | None:
    """`envoy.cluster.<cluster>.<stat>:<value>|<type>` → (cluster, stat, value) for the
    stats kept here; None for every other line."""
    name, sep, rest = line.partition(":")
    if not sep or not name.startswith(_PREFIX):
        return None
    cluster, _, stat = name[len(_PREFIX):].partition(".")
    if not cluster or (stat not in _CLASSES and stat != _LATENCY):  # sub-scopes: "external.upstream_rq_2xx"
        return None
    value, _, kind = rest.partition("|")
    if (stat == _LATENCY) != (kind.split("|")[0] == "ms"):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return cluster, stat, number


class StatsCollector:
    """Receives statsd datagrams and answers windowed per-cluster questions."""

    def __init__(self, *, retention_s: float = 3600.0, clock: Callable[[], float] = time.time,
                 max_samples_per_bucket: int = 10_000) -> None:
        self.retention_s = retention_s
        self._clock = clock
        self._max_samples = max_samples_per_bucket
        # arrival bucket (time // RESOLUTION_S) → cluster → counts
        self._buckets: dict[int, dict[str, _Bucket]] = {}
        self.datagrams = 0

    def feed(self, data: bytes) -> None:
        now = self._clock()
        self.datagrams += 1
        clusters = self._buckets.setdefault(math.floor(now / RESOLUTION_S), {})
        for raw in data.decode("utf-8", errors="replace").splitlines():
            parsed = parse_line(raw.strip())
            if parsed is None:
                continue
            cluster, stat, value = parsed
            bucket = clusters.setdefault(cluster, _Bucket())
            if stat == _LATENCY:
                if len(bucket.latencies) < self._max_samples:
                    bucket.latencies.append(value)
            elif value:
                klass = _CLASSES[stat]
                bucket.responses[klass] = bucket.responses.get(klass, 0) + int(value)
        self._expire(now)

    def _expire(self, now: float) -> None:
        oldest = math.floor((now - self.retention_s) / RESOLUTION_S)
        for bucket in [b for b in self._buckets if b < oldest]:
            del self._buckets[bucket]

    def window(self, clusters: Iterable[str], *, since: float, until: float | None = None) -> dict[str, VariantWindow]:
        """Each cluster's responses that arrived in [since, until), to RESOLUTION_S: a
        bucket counts in the window holding its start, so back-to-back windows never
        count a response twice. Clusters are named as in xDS (`modelserver/ns/a.b`)."""
        end = self._clock() if until is None else until
        wanted = list(clusters)
        totals: dict[str, _Bucket] = {c: _Bucket() for c in wanted}
        for bucket, by_cluster in self._buckets.items():
            if not since <= bucket * RESOLUTION_S < end:
                continue
            for cluster in wanted:
                bucket = by_cluster.get(stat_name(cluster))
                if bucket is None:
                    continue
                total = totals[cluster]
                for klass, n in bucket.responses.items():
                    total.responses[klass] = total.responses.get(klass, 0) + n
                total.latencies.extend(bucket.latencies)
        return {c: VariantWindow(c, tuple(sorted(t.responses.items())), tuple(t.latencies)) for c, t in totals.items()}


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, collector: StatsCollector) -> None:
        self._collector = collector

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._collector.feed(data)
        except Exception:  # a malformed datagram must never stop the listener
            log.exception("statsd datagram dropped: source=%s", addr)


@dataclass
class StatsListener:
    """The UDP socket Envoys push to; `port` is known once started (0 picks a free one)."""

    collector: StatsCollector
    host: str = "127.0.0.1"
    port: int = 0
    _transport: asyncio.DatagramTransport | None = field(default=None, init=False)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self.collector),
                                                           local_addr=(self.host, self.port))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        log.info("stats listener up: address=%s:%s", self.host, self.port)
        return self.port

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


@dataclass
class StatsTcpListener:
    """The same statsd lines over TCP (Envoy's `tcp_cluster_name` sink): one connection
    per Envoy, newline-delimited; each complete batch of lines is fed as it arrives.
    With `tls` (in a cluster) only a client with a gateway certificate is heard: a forged
    statsd line could move a canary's weight."""

    collector: StatsCollector
    host: str = "127.0.0.1"
    port: int = 0
    max_line: int = 64 * 1024
    tls: ssl.SSLContext | None = None
    _server: asyncio.Server | None = field(default=None, init=False)
    _connections: set[asyncio.StreamWriter] = field(default_factory=set, init=False)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=self.max_line, ssl=self.tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("stats listener (tcp) up: address=%s:%s", self.host, self.port)
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        pending = b""
        try:
            while chunk := await reader.read(65536):
                data, newline, pending = (pending + chunk).rpartition(b"\n")
                if newline:
                    self.collector.feed(data)
                if len(pending) > self.max_line:  # no newline in sight: not statsd
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a malformed stream must never stop the listener
            log.exception("statsd stream dropped")
        finally:
            self._connections.discard(writer)
            writer.close()

    def drop_connections(self) -> None:
        """Close every Envoy's connection: they reconnect, through a Service to whoever
        it selects now (in a cluster: the new leader)."""
        for writer in list(self._connections):
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None
