"""The control plane's spans (optional, off by default), sent over OTLP/gRPC to the same
collector as the gateways' (`routing_engine.translate.tracing`).

What is traced: each push of the control loop (`modelroute.push`: the world's size and
what changed) with one child span per node group's compile (`modelroute.compile`: group,
resources). Enough to see, beside Envoy's request spans, when a config was built and
how long it took.

Why not the OpenTelemetry SDK: its `opentelemetry-proto` package installs the same
`opentelemetry/proto/...` modules that xds-protos already ships (Envoy's APIs import
them), in other versions, into the same directory. So spans are built with those
xds-protos messages and exported with a plain gRPC unary call to
`opentelemetry.proto.collector.trace.v1.TraceService/Export`, batched every second (at
most MAX_BATCH spans; a full queue drops the oldest). An export that fails is logged and
dropped: tracing must never slow the push path.

`NO_TRACING` is the default: its spans cost a context manager and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc

from kit.tasks import cancel_and_wait, spawn
from controller.local.instance import split_address
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from routing_engine import plugins as plugin
from routing_engine.plugins import Plugin, TracingPlugin, TracingSettings

log = logging.getLogger("modelroute.tracing")

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SERVICE_NAME = "modelroute-control-plane"
FLUSH_S = 1.0
MAX_BATCH = 512
MAX_QUEUED = 4096


@dataclass(slots=True)
class Span:
    """One span being recorded; `set` adds attributes before it ends."""

    name: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes = b""
    start_ns: int = field(default_factory=time.time_ns)
    attributes: dict[str, str | int | float] = field(default_factory=dict)

    def set(self, **attributes: str | int | float) -> None:
        self.attributes.update(attributes)

    def child(self, name: str) -> Span:
        return Span(name, self.trace_id, os.urandom(8), self.span_id)


def _value(value: str | int | float) -> common_pb2.AnyValue:
    if isinstance(value, bool) or isinstance(value, str):
        return common_pb2.AnyValue(string_value=str(value))
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    return common_pb2.AnyValue(double_value=float(value))


class Tracer:
    """Records spans; `NO_TRACING` records none, `OtlpTracer` exports them."""

    enabled = False

    @contextmanager
    def span(self, name: str, parent: Span | None = None, **attributes: str | int | float) -> Iterator[Span]:
        span = parent.child(name) if parent is not None else Span(name, os.urandom(16), os.urandom(8))
        span.attributes.update(attributes)
        try:
            yield span
        finally:
            if self.enabled:
                self._finish(span, time.time_ns())

    def _finish(self, span: Span, end_ns: int) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


NO_TRACING = Tracer()


class OtlpTracer(Tracer):
    enabled = True

    def __init__(self, endpoint: str, *, resource: Mapping[str, str] | None = None) -> None:
        self.endpoint = endpoint
        self._resource = {"service.name": SERVICE_NAME, **(resource or {})}
        self._queue: deque[trace_pb2.Span] = deque(maxlen=MAX_QUEUED)
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self.exported = 0

    def _finish(self, span: Span, end_ns: int) -> None:
        self._queue.append(trace_pb2.Span(
            trace_id=span.trace_id, span_id=span.span_id, parent_span_id=span.parent_id, name=span.name,
            kind=trace_pb2.Span.SPAN_KIND_INTERNAL, start_time_unix_nano=span.start_ns, end_time_unix_nano=end_ns,
            attributes=[common_pb2.KeyValue(key=k, value=_value(v)) for k, v in sorted(span.attributes.items())]))

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.endpoint)
        self._task = spawn(self._run(), name="otlp exporter")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.flush()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()

    async def flush(self) -> None:
        """Export what is queued (in batches of MAX_BATCH); a failed batch is dropped."""
        while self._queue and self._channel is not None:
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            request = trace_service_pb2.ExportTraceServiceRequest()
            spans = request.resource_spans.add()
            spans.resource.attributes.extend(common_pb2.KeyValue(key=k, value=_value(v))
                                             for k, v in sorted(self._resource.items()))
            # xds-protos' OTLP is older: its `instrumentation_library_spans` is field 2, the
            # same bytes as OTLP 1.x's `scope_spans` (scope name = field 1.1).
            scope = spans.instrumentation_library_spans.add()
            scope.instrumentation_library.name = "modelroute"
            scope.spans.extend(batch)
            call: grpc.aio.UnaryUnaryMultiCallable[trace_service_pb2.ExportTraceServiceRequest,
                                                   trace_service_pb2.ExportTraceServiceResponse]
            call = self._channel.unary_unary(EXPORT, request_serializer=lambda m: m.SerializeToString(),
                                             response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
            try:
                await call(request, timeout=5.0)
                self.exported += len(batch)
            except grpc.aio.AioRpcError as err:
                log.warning("spans not exported: endpoint=%s spans=%d error=%s", self.endpoint, len(batch),
                            err.code().name, extra={"endpoint": self.endpoint})
                return


def tracing(endpoint: str | None, sampling_percent: float,
            plugins: Sequence[Plugin] | None) -> tuple[Tracer, tuple[Plugin, ...] | None]:
    """The control plane's tracer and the translator's plugins for a run mode: unchanged
    without an OTLP `endpoint` (HOST:PORT); with one, spans go there and every gateway
    listener traces too."""
    if endpoint is None:
        return NO_TRACING, None if plugins is None else tuple(plugins)
    host, port = split_address(endpoint)
    base = plugin.with_builtin(plugin.discover()) if plugins is None else tuple(plugins)
    settings = TracingSettings(host=host, port=port, sampling_percent=sampling_percent)
    return OtlpTracer(endpoint), plugin.ordered([*base, TracingPlugin(settings)])
