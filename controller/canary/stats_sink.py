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

Per request, the access log's stats (`routing_engine.translate.access_log`) arrive the
same way, tagged by the destination cluster's stat name:
`envoy.modelroute_variant.requests.cluster.<cluster>.code.<status>:1|c` and one sample per
request of `duration`, `ttft` (time to first token), `prompt_tokens` and
`completion_tokens` (`envoy.modelroute_variant.<stat>.cluster.<cluster>:<value>|ms`). A
failover pair (`failover/<primary>/<fallback>`) counts as its primary, in both.

What is kept: per destination cluster (`modelserver/<ns>/<name>`) and per quarter second
of arrival, the upstream responses by class (2xx/3xx/4xx/5xx, per attempt: what the
canary verdict counts), the latency samples, and per request the final status codes and
the LLM samples. `window()` sums any time range still retained (the canary analysis asks
for its interval; the A/B report for the rollout so far). Attribution is by arrival
time, so a window is accurate to one flush interval. Since start, the same numbers are
also summed for good (`cumulative()`, bucketed histograms) for the Prometheus series of
`controller.variant_metrics`, which must not go down when old buckets expire.

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
_VARIANT_PREFIX = "envoy.modelroute_variant."  # the access log's stats (translate.access_log)
SAMPLES = ("duration", "ttft", "prompt_tokens", "completion_tokens")  # per-request histograms
_CODE_SUFFIX = ".code."
RESOLUTION_S = 0.25  # arrival-time buckets: windows are exact to this (and the flush interval)
# Upper bounds of the cumulative histograms: milliseconds for durations, tokens otherwise.
MS_BOUNDS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000)
TOKEN_BOUNDS = (1, 4, 16, 64, 128, 256, 512, 1_024, 2_048, 4_096, 8_192, 16_384, 32_768)
BOUNDS = {"duration": MS_BOUNDS, "ttft": MS_BOUNDS, "prompt_tokens": TOKEN_BOUNDS, "completion_tokens": TOKEN_BOUNDS}


@dataclass(frozen=True, slots=True)
class VariantWindow:
    """One destination cluster's responses over a time window."""

    cluster: str
    responses: tuple[tuple[str, int], ...] = ()  # (class, count), classes 2xx..5xx, per upstream attempt
    latencies_ms: tuple[float, ...] = ()  # upstream_rq_time, per attempt
    codes: tuple[tuple[int, int], ...] = ()  # (status, count) per request, as the client got it
    samples: tuple[tuple[str, tuple[float, ...]], ...] = ()  # SAMPLES name → per-request values

    def count(self, klass: str) -> int:
        return dict(self.responses).get(klass, 0)

    def values(self, sample: str) -> tuple[float, ...]:
        return dict(self.samples).get(sample, ())

    @property
    def completed(self) -> int:
        """Requests the access log counted (per request, final status)."""
        return sum(n for _, n in self.codes)

    def status_classes(self) -> dict[str, int]:
        """Requests by 2xx / 3xx / 4xx (429 apart: rate limited) / 5xx."""
        out = {"2xx": 0, "3xx": 0, "4xx": 0, "429": 0, "5xx": 0}
        for code, n in self.codes:
            klass = "429" if code == 429 else f"{code // 100}xx"
            if klass in out:
                out[klass] += n
        return out

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
    codes: dict[int, int] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)


@dataclass(slots=True)
class Histogram:
    """A cumulative histogram: counts per upper bound of `bounds` (the last one +Inf)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class Cumulative:
    """One cluster's numbers since start (never expire)."""

    responses: dict[str, int] = field(default_factory=dict)
    codes: dict[int, int] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _counted_as(tag: str) -> str:
    """A cluster's stat name or the access log's cluster tag → the stat name `window()`
    looks up: a failover pair (`failover/<primary>/<fallback>`, one cluster of its own
    whose upstream counters Envoy keeps under its name) counts as its primary."""
    if tag.startswith("failover/"):
        parts = tag.split("/")
        return stat_name("/".join(parts[1:4]))
    return tag


def _parse_variant(name: str, kind: str) -> tuple[str, str] | None:
    """`modelroute_variant.<stat>.cluster.<c>[.code.<n>]` (prefix removed) → (cluster, stat)."""
    stat, sep, tagged = name.partition(".cluster.")
    if not sep or not tagged or tagged == "-":
        return None
    if stat == "requests" and kind == "c":
        cluster, sep, code = tagged.rpartition(_CODE_SUFFIX)
        if not sep or not cluster or cluster == "-" or not code.isdigit() or not 100 <= int(code) <= 599:
            return None
        return _counted_as(cluster), f"code/{int(code)}"
    if stat in SAMPLES and kind == "ms":
        return _counted_as(tagged), stat
    return None


def parse_line(line: str) -> tuple[str, str, float] | None:
    """A statsd line → (cluster, stat, value) for the stats kept here; None for every
    other line. `stat` is an upstream class counter (`upstream_rq_5xx`), `upstream_rq_time`,
    a per-request status (`code/429`) or a per-request sample (one of SAMPLES)."""
    name, sep, rest = line.partition(":")
    if not sep:
        return None
    value, _, kind = rest.partition("|")
    kind = kind.split("|")[0]
    number = _number(value)
    if number is None:
        return None
    if name.startswith(_VARIANT_PREFIX):
        parsed = _parse_variant(name[len(_VARIANT_PREFIX):], kind)
        return None if parsed is None else (*parsed, number)
    if not name.startswith(_PREFIX):
        return None
    cluster, _, stat = name[len(_PREFIX):].partition(".")
    if not cluster or (stat not in _CLASSES and stat != _LATENCY):  # sub-scopes: "external.upstream_rq_2xx"
        return None
    if (stat == _LATENCY) != (kind == "ms"):
        return None
    return _counted_as(cluster), stat, number


class StatsCollector:
    """Receives statsd datagrams and answers windowed per-cluster questions."""

    def __init__(self, *, retention_s: float = 3600.0, clock: Callable[[], float] = time.time,
                 max_samples_per_bucket: int = 10_000) -> None:
        self.retention_s = retention_s
        self._clock = clock
        self._max_samples = max_samples_per_bucket
        # arrival bucket (time // RESOLUTION_S) → cluster → counts
        self._buckets: dict[int, dict[str, _Bucket]] = {}
        self._cumulative: dict[str, Cumulative] = {}  # stat name → since start
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
            total = self._cumulative.setdefault(cluster, Cumulative())
            if stat == _LATENCY:
                if len(bucket.latencies) < self._max_samples:
                    bucket.latencies.append(value)
            elif stat in _CLASSES:
                if value:
                    klass = _CLASSES[stat]
                    bucket.responses[klass] = bucket.responses.get(klass, 0) + int(value)
                    total.responses[klass] = total.responses.get(klass, 0) + int(value)
            elif stat.startswith("code/"):
                if value:
                    code = int(stat[len("code/"):])
                    bucket.codes[code] = bucket.codes.get(code, 0) + int(value)
                    total.codes[code] = total.codes.get(code, 0) + int(value)
            else:
                samples = bucket.samples.setdefault(stat, [])
                if len(samples) < self._max_samples:
                    samples.append(value)
                total.histograms.setdefault(stat, Histogram(BOUNDS[stat])).observe(value)
        self._expire(now)

    def cumulative(self) -> dict[str, Cumulative]:
        """Every cluster's numbers since start, by stat name (a copy: safe to read while
        datagrams keep arriving)."""
        return {cluster: Cumulative(dict(c.responses), dict(c.codes),
                                    {k: Histogram(h.bounds, list(h.counts), h.total, h.count)
                                     for k, h in c.histograms.items()})
                for cluster, c in self._cumulative.items()}

    def _expire(self, now: float) -> None:
        oldest = math.floor((now - self.retention_s) / RESOLUTION_S)
        for bucket in [b for b in self._buckets if b < oldest]:
            del self._buckets[bucket]

    def window(self, clusters: Iterable[str], *, since: float, until: float | None = None) -> dict[str, VariantWindow]:
        """Each cluster's responses that arrived in [since, until), to RESOLUTION_S: a
        bucket counts in the window holding its start, so back-to-back windows never
        count a response twice. Clusters are named as in xDS (`modelserver/ns/a.b`)."""
        end = self._clock() if until is None else until
        return {c: windows[0] for c, windows in self.series(clusters, since=since, until=end, step=end - since).items()}

    def series(self, clusters: Iterable[str], *, since: float, until: float, step: float) -> dict[str, list[VariantWindow]]:
        """Each cluster's windows [since + i·step, since + (i+1)·step) up to `until`, in one
        pass over the retained buckets (the experiment page's charts)."""
        wanted = {stat_name(c): c for c in clusters}
        count = max(1, math.ceil((until - since) / step)) if step > 0 else 1
        totals: dict[tuple[str, int], _Bucket] = {}
        for bucket, by_cluster in self._buckets.items():
            start = bucket * RESOLUTION_S
            if not since <= start < until:
                continue
            index = min(count - 1, int((start - since) // step)) if step > 0 else 0
            for stat, data in by_cluster.items():
                if stat not in wanted:
                    continue
                total = totals.setdefault((stat, index), _Bucket())
                for klass, n in data.responses.items():
                    total.responses[klass] = total.responses.get(klass, 0) + n
                total.latencies.extend(data.latencies)
                for code, n in data.codes.items():
                    total.codes[code] = total.codes.get(code, 0) + n
                for name, values in data.samples.items():
                    total.samples.setdefault(name, []).extend(values)
        out: dict[str, list[VariantWindow]] = {}
        for stat, cluster in wanted.items():
            out[cluster] = [_as_window(cluster, totals.get((stat, i))) for i in range(count)]
        return out


def _as_window(cluster: str, total: _Bucket | None) -> VariantWindow:
    if total is None:
        return VariantWindow(cluster)
    return VariantWindow(cluster, tuple(sorted(total.responses.items())), tuple(total.latencies),
                         tuple(sorted(total.codes.items())),
                         tuple((name, tuple(v)) for name, v in sorted(total.samples.items())))


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
