"""What the gateway and the control plane tell about each request and each push: Envoy's
JSON access log on its stdout (route, variant, model, status, tokens, durations), the
control plane's `--log-format json`, and OpenTelemetry traces from both (Envoy's tracer
and the control plane's spans) at a collector, only when asked for."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from modelroute.logs import JsonFormatter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from routing_engine.api.resources import ObjectKey
from tests.e2e.harness import dest, infer, route, running, server, write_manifests
from tests.support import free_port

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_json_log_lines_carry_the_fields_of_the_event() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("modelroute.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("envoy rejected config: node=%s", "gw-1", extra={"route": ObjectKey("ModelRoute", "d", "r"),
                                                                        "requests": 3})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("step failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
    assert first["message"] == "envoy rejected config: node=gw-1" and first["level"] == "warning"
    assert first["route"] == str(ObjectKey("ModelRoute", "d", "r"))  # as the text format shows it
    assert first["requests"] == 3 and first["logger"] == "modelroute.test.json" and first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exception"]


def _world(directory: Path, port: int) -> None:
    write_manifests(directory / "world.yaml", [
        infer("v1"), infer("v2"), server("v1", port=port, path="/v1/models/v1"),
        server("v2", port=port, path="/v1/models/v2"),
        route("chat", path="/v1", routes=[dest("v1", 50), dest("v2", 50)])])


async def _chat(port: int, *, stream: bool) -> dict[str, str]:
    body: dict[str, Any] = {"model": "llama", "messages": [{"role": "user", "content": "one two three"}],
                            "max_tokens": 5}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                                headers={"x-request-id": f"req-{'stream' if stream else 'plain'}"}) as response:
            await response.read()
            assert response.status == 200
            return dict(response.headers)


def _access_log(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "gateway.stdout"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")] if path.exists() else []


async def _lines(run_dir: Path, request_ids: set[str], *, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
    """The access log lines of `request_ids` (the gateway flushes its access log every second)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {line["request_id"]: line for line in _access_log(run_dir) if line.get("request_id") in request_ids}
        if set(found) == request_ids:
            return found
        assert time.monotonic() < deadline, f"access log lines of {request_ids - set(found)} not written"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_envoy_writes_one_json_access_log_line_per_request(tmp_path: Path) -> None:
    port = free_port()
    _world(tmp_path, port)
    async with running(tmp_path) as app:
        await _chat(port, stream=True)
        await _chat(port, stream=False)
        lines = await _lines(app.options.run_dir, {"req-stream", "req-plain"})
    for line in lines.values():
        assert line["route"] == "modelroute/default/chat/0" and line["status"] == 200
        assert line["variant"] in ("modelserver/default/v1", "modelserver/default/v2")
        assert line["model"] == "llama" and line["method"] == "POST" and line["path"] == "/v1/chat/completions"
        assert (line["prompt_tokens"], line["completion_tokens"]) == ("3", "5")
        assert isinstance(line["duration_ms"], int) and isinstance(line["ttft_ms"], int)
        assert line["trace_id"] is None  # no tracing unless asked for
    assert lines["req-stream"]["usage_source"] == "reported" and lines["req-plain"]["usage_source"] == "reported"


class Collector:
    """A stand-in OpenTelemetry collector: OTLP/gRPC TraceService/Export on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def spans(self) -> list[tuple[str, str, bytes]]:
        """(service.name, span name, trace id) of every span received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                out += [(service, span.name, span.trace_id)  # field 2: OTLP 1.x's scope_spans
                        for scope in resource_spans.instrumentation_library_spans for span in scope.spans]
        return out

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        async def export(request: trace_service_pb2.ExportTraceServiceRequest,
                         context: grpc.aio.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
            self.requests.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

        handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.trace.v1.TraceService", {
            "Export": grpc.unary_unary_rpc_method_handler(
                export, request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
                response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString)})
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([handler])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield port
        finally:
            await server.stop(None)


@pytest.mark.slow
async def test_traces_reach_the_collector_from_envoy_and_the_control_plane(tmp_path: Path) -> None:
    port = free_port()
    _world(tmp_path, port)
    collector = Collector()
    async with collector.serving() as otlp_port:
        async with running(tmp_path, otlp_endpoint=f"127.0.0.1:{otlp_port}") as app:
            await _chat(port, stream=False)
            (line,) = (await _lines(app.options.run_dir, {"req-plain"})).values()
            deadline = time.monotonic() + 10
            while not ({"modelroute-gateway", "modelroute-control-plane"} <= {s for s, _, _ in collector.spans()}):
                if time.monotonic() > deadline:
                    stats = await app.envoy.stats(prefix="cluster.modelroute_otlp")  # type: ignore[union-attr]
                    tracing = await app.envoy.stats(prefix="tracing")  # type: ignore[union-attr]
                    raise AssertionError(f"spans received: {collector.spans()}; {stats}; {tracing}")
                await asyncio.sleep(0.1)
    gateway = [(name, trace) for service, name, trace in collector.spans() if service == "modelroute-gateway"]
    assert line["trace_id"] in {trace.hex() for _, trace in gateway}  # the access log names the request's trace
    names = {name for service, name, _ in collector.spans() if service == "modelroute-control-plane"}
    assert {"modelroute.push", "modelroute.compile"} <= names
