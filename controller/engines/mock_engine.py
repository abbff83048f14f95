"""MOCK inference engine — the default local replica of a ModelInfer in embedded mode.

It is not a model: it answers the wire protocols a real engine speaks so routing can be
exercised end to end without GPUs — KServe v2 `POST .../infer`, OpenAI
`POST .../v1/chat/completions` and `.../v1/completions` (with a `usage` block; with
`"stream": true` as server-sent events in OpenAI's chunk format, a final `usage` chunk
when `stream_options.include_usage` is set, then `data: [DONE]`), `GET /health`, and
vLLM-style `GET /metrics`. Envoy forwards paths unchanged (SPEC 3.3), so the protocol is
picked by path *suffix* (`/v1/models/llama/v1/chat/completions` works).

Every response names the ModelInfer and replica that served it (JSON `served_by`, headers
`x-modelinfer` / `x-replica`) and echoes the request path, which is what the routing
tests assert on. Slowness and failures can be injected by flags, at run time with
`POST /_mock/behaviour {"delay_ms", "chunk_delay_ms", "fail_rate", "fail_status",
"completion_tokens", "healthy"}`, or per request with the `x-mock-delay-ms` (before the
answer), `x-mock-chunk-delay-ms` (between streamed chunks) and `x-mock-status` headers.
The control endpoint answers only requests made to the replica directly: one that came
through a proxy (Envoy sets `x-forwarded-proto` on every request it forwards) is refused
with 403, so a client of the gateway can never reconfigure a model.

Inference-aware routing (issue #18):
- **Queueing model** (`mock_batching`): with `decode_ms` or `prefill_ms_per_token` set,
  chat and completion requests go through a continuous-batching scheduler (concurrency,
  KV cache, prefix cache, `speed`); otherwise they are answered at once as before.
- **Load reports:** a request carrying `endpoint-load-metrics-format: TEXT|JSON|BIN` (as
  vLLM's) gets an ORCA `endpoint-load-metrics` response header in that format:
  `application_utilization` (the scheduler's load), `rps_fractional` (completions per
  second) and `named_metrics` kv_cache_usage_perc, num_requests_running and
  num_requests_waiting.
- **LoRA adapters** (vLLM's runtime LoRA API): `--adapters a,b` loads adapters at start;
  `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and `/v1/unload_lora_adapter
  {"lora_name"}` change them (direct requests only, like `/_mock/`). `GET .../v1/models`
  lists the base model and the loaded adapters (`parent` = the base). A request whose
  `model` is a loaded adapter is answered as the adapter (`served_by.adapter`); one
  naming an adapter this replica has had but unloaded gets vLLM's 404, so a router that
  sends adapter traffic to the wrong replica is seen. Other names are served as the base
  model (the mock is lenient: routes match arbitrary model names).

Run: `python -m controller.engines.mock_engine --port P --model NAME --infer NAME --replica N`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web

from controller.engines.mock_batching import RATE_WINDOW_S, Scheduler, Timing

MOCK_NOTICE = "modelroute mock inference engine (not a real model)"
# Headers only a proxy adds: a request carrying one did not come to the replica directly.
PROXIED = ("x-forwarded-proto", "x-forwarded-for", "x-envoy-internal")
# Paths that change the replica: answered to direct requests only.
CONTROL_PATHS = ("/_mock/", "/v1/load_lora_adapter", "/v1/unload_lora_adapter")
LOAD_FORMAT_HEADER = "endpoint-load-metrics-format"  # what vLLM reads to send a load report
LOAD_REPORT_HEADER = "endpoint-load-metrics"


@dataclass
class Behaviour:
    """What the mock does to each request; changeable at run time."""

    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0  # between two chunks of a streamed answer
    fail_rate: float = 0.0
    fail_status: int = 500
    completion_tokens: int = 16
    healthy: bool = True  # False: GET /health answers 503, so readiness drops (failover demos)
    # The queueing model (controller/engines/mock_batching.Timing): off while both times are 0.
    decode_ms: float = 0.0
    prefill_ms_per_token: float = 0.0
    batch_slowdown: float = 0.0
    kv_slowdown: float = 0.0
    kv_tokens: int = 0
    speed: float = 1.0
    prefix_cache_tokens: int = 0
    max_running: int = 64  # concurrent requests before queueing (runtime changes: queueing model only)

    def timing(self) -> Timing:
        return Timing(self.decode_ms, self.prefill_ms_per_token, self.batch_slowdown, self.kv_slowdown,
                      self.kv_tokens, self.speed, self.prefix_cache_tokens, self.max_running)

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(unknown)}")
        new = Behaviour(**{**asdict(self), **changes})
        if not isinstance(new.delay_ms, (int, float)) or new.delay_ms < 0:
            raise ValueError("delay_ms must be a number >= 0")
        if not isinstance(new.chunk_delay_ms, (int, float)) or new.chunk_delay_ms < 0:
            raise ValueError("chunk_delay_ms must be a number >= 0")
        if not isinstance(new.fail_rate, (int, float)) or not 0 <= new.fail_rate <= 1:
            raise ValueError("fail_rate must be a number in [0, 1]")
        if not isinstance(new.fail_status, int) or not 100 <= new.fail_status <= 599:
            raise ValueError("fail_status must be an HTTP status code")
        if not isinstance(new.completion_tokens, int) or new.completion_tokens < 0:
            raise ValueError("completion_tokens must be an integer >= 0")
        if not isinstance(new.healthy, bool):
            raise ValueError("healthy must be true or false")
        for name in ("decode_ms", "prefill_ms_per_token", "batch_slowdown", "kv_slowdown"):
            value = getattr(new, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        for name in ("kv_tokens", "prefix_cache_tokens"):
            value = getattr(new, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0")
        if isinstance(new.max_running, bool) or not isinstance(new.max_running, int) or new.max_running < 1:
            raise ValueError("max_running must be an integer >= 1")
        if isinstance(new.speed, bool) or not isinstance(new.speed, (int, float)) or not new.speed > 0:
            raise ValueError("speed must be a number > 0")
        for f in fields(self):
            setattr(self, f.name, getattr(new, f.name))


@dataclass
class Identity:
    model: str
    infer: str
    namespace: str
    replica: int

    @property
    def headers(self) -> dict[str, str]:
        return {"x-modelinfer": f"{self.namespace}/{self.infer}", "x-replica": str(self.replica)}

    def served_by(self, adapter: str | None = None) -> dict[str, Any]:
        found = {"modelinfer": self.infer, "namespace": self.namespace, "replica": self.replica,
                 "model": self.model, "engine": "mock"}
        return found if adapter is None else {**found, "adapter": adapter}


class MockEngine:
    """Request handling and the counters behind `/metrics`."""

    def __init__(self, identity: Identity, behaviour: Behaviour, *, max_running: int | None = None,
                 seed: int | None = None, adapters: dict[str, str] | None = None) -> None:
        self.identity = identity
        self.behaviour = behaviour
        if max_running is not None:
            behaviour.update({"max_running": max_running})
        self.max_running = behaviour.max_running  # the slots of the immediate path, fixed at start
        self._slots = asyncio.Semaphore(self.max_running)
        self._rng = random.Random(seed)
        self.running = 0
        self.waiting = 0
        self.counts = {"success": 0, "failed": 0, "prompt_tokens": 0, "generation_tokens": 0}
        self.scheduler = Scheduler(behaviour.timing)
        self.adapters: dict[str, str] = dict(adapters or {})  # loaded LoRA adapter → its path
        self._known_adapters = set(self.adapters)  # ever loaded here: asking for one unloaded is a 404
        self._completed: deque[float] = deque()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._direct_only])
        app.router.add_post("/_mock/behaviour", self.set_behaviour)
        app.router.add_get("/_mock/behaviour", self.get_behaviour)
        app.router.add_post("/v1/load_lora_adapter", self.load_adapter)
        app.router.add_post("/v1/unload_lora_adapter", self.unload_adapter)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    @web.middleware
    async def _direct_only(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PATHS) and any(h in request.headers for h in PROXIED):
            return self.reply(request, {"error": "the mock's control endpoints answer direct requests only, "
                                                 "not ones through a proxy"}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    def reply(self, request: web.Request, body: dict[str, Any], status: int = 200, *,
              adapter: str | None = None, report: dict[str, str] | None = None) -> web.Response:
        """A JSON answer; its load report is `report`, else the load now."""
        body = {**body, "served_by": self.identity.served_by(adapter), "path": request.path_qs}
        report = self.load_report(request) if report is None else report
        return web.json_response(body, status=status, headers={**self.identity.headers, **report})

    # --- load reports (ORCA) -----------------------------------------------------------

    @property
    def batching(self) -> bool:
        return self.behaviour.timing().active

    def num_running(self) -> int:
        return self.running + len(self.scheduler.running)

    def num_waiting(self) -> int:
        return self.waiting + len(self.scheduler.waiting)

    def kv_use(self) -> float:
        if self.scheduler.running or self.scheduler.waiting or self.batching:
            return self.scheduler.kv_use()
        return min(1.0, self.running / self.max_running)

    def request_rate(self) -> float:
        """Completed requests per second over the last RATE_WINDOW_S."""
        now = time.monotonic()
        while self._completed and self._completed[0] < now - RATE_WINDOW_S:
            self._completed.popleft()
        return len(self._completed) / RATE_WINDOW_S

    def load_report(self, request: web.Request) -> dict[str, str]:
        """The `endpoint-load-metrics` header when the request asks for one (vLLM's
        convention), in the format asked: `TEXT k=v, ...`, `JSON {...}` or `BIN
        <base64 OrcaLoadReport>`; nothing otherwise."""
        wanted = request.headers.get(LOAD_FORMAT_HEADER, "").strip().upper()
        if wanted not in ("TEXT", "JSON", "BIN"):
            return {}
        capacity = self.scheduler.max_running if self.batching else self.max_running
        slots = (self.num_running() + self.num_waiting()) / capacity
        utilization = max(slots, self.scheduler.load()) if self.batching else slots
        named = {"kv_cache_usage_perc": round(self.kv_use(), 4), "num_requests_running": float(self.num_running()),
                 "num_requests_waiting": float(self.num_waiting())}
        report = {"application_utilization": round(utilization, 4), "rps_fractional": round(self.request_rate(), 4)}
        if wanted == "TEXT":
            pairs = [*(f"{k}={v}" for k, v in report.items()), *(f"named_metrics.{k}={v}" for k, v in named.items())]
            return {LOAD_REPORT_HEADER: "TEXT " + ", ".join(pairs)}
        if wanted == "JSON":
            return {LOAD_REPORT_HEADER: "JSON " + json.dumps({**report, "named_metrics": named}, separators=(",", ":"))}
        from xds.data.orca.v3 import orca_load_report_pb2  # only when asked: keeps start-up light

        proto = orca_load_report_pb2.OrcaLoadReport(**report, named_metrics=named)
        return {LOAD_REPORT_HEADER: "BIN " + base64.b64encode(proto.SerializeToString()).decode()}

    # --- LoRA adapters -------------------------------------------------------------------

    def adapter_for(self, body: dict[str, Any]) -> tuple[str | None, bool]:
        """(the adapter a request names, whether this replica can serve it)."""
        model = body.get("model")
        if not isinstance(model, str) or model == self.identity.model:
            return None, True
        if model in self.adapters:
            return model, True
        return (model, False) if model in self._known_adapters else (None, True)

    async def load_adapter(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        if isinstance(body, web.Response):
            return body
        name, path = body.get("lora_name"), body.get("lora_path", "")
        if not isinstance(name, str) or not name or not isinstance(path, str):
            return self.reply(request, {"error": "lora_name (a string) is required, lora_path must be a string"},
                              status=400)
        if name in self.adapters:
            return self.reply(request, {"error": f"The lora adapter '{name}' has already been loaded."}, status=400)
        self.adapters[name] = path or name
        self._known_adapters.add(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.", headers=self.identity.headers)

    async def unload_adapter(self, request: web.Request) -> web.Response:
        body = await self._control_body(request)
        if isinstance(body, web.Response):
            return body
        name = body.get("lora_name")
        if not isinstance(name, str) or name not in self.adapters:
            return self.reply(request, {"error": f"The lora adapter '{name}' cannot be found."}, status=404)
        del self.adapters[name]
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.",
                            headers=self.identity.headers)

    async def _control_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.reply(request, {"error": "request body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return self.reply(request, {"error": "request body must be a JSON object"}, status=400)
        return body

    def models(self) -> dict[str, Any]:
        """vLLM's `GET /v1/models`: the base model, then each loaded adapter."""
        base = self.identity.model
        data = [{"id": base, "object": "model", "created": 0, "owned_by": "mock", "root": base, "parent": None}]
        data += [{"id": name, "object": "model", "created": 0, "owned_by": "mock", "root": path, "parent": base}
                 for name, path in sorted(self.adapters.items())]
        return {"object": "list", "data": data}

    async def get_behaviour(self, request: web.Request) -> web.Response:
        return self.reply(request, {"behaviour": asdict(self.behaviour)})

    async def set_behaviour(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            self.behaviour.update(changes)
        except (ValueError, TypeError) as exc:
            return self.reply(request, {"error": str(exc)}, status=400)
        return self.reply(request, {"behaviour": asdict(self.behaviour)})

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        if request.method == "GET" and path.endswith("/health"):
            if not self.behaviour.healthy:
                return self.reply(request, {"status": "unhealthy (mock behaviour)"}, status=503)
            return self.reply(request, {"status": "ok"})
        if request.method == "GET" and path.endswith("/metrics"):
            return web.Response(text=self.metrics_text(), content_type="text/plain", headers=self.identity.headers)
        if request.method == "GET" and path.endswith("/v1/models"):
            return web.json_response(self.models(), headers=self.identity.headers)
        if request.method == "POST":
            for suffix, handler in (("/v1/chat/completions", self.chat), ("/v1/completions", self.completion),
                                    ("/infer", self.infer)):
                if path.endswith(suffix):
                    return await self.serve(request, handler)
        return self.reply(request, {"error": f"mock engine: no handler for {request.method} {request.path}"},
                          status=404)

    async def serve(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return self.reply(request, {"error": "request body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return self.reply(request, {"error": "request body must be a JSON object"}, status=400)
        try:
            delay_ms = float(request.headers.get("x-mock-delay-ms", self.behaviour.delay_ms))
            chunk_delay_ms = float(request.headers.get("x-mock-chunk-delay-ms", self.behaviour.chunk_delay_ms))
            forced = int(request.headers["x-mock-status"]) if "x-mock-status" in request.headers else None
        except ValueError:
            return self.reply(request, {"error": "x-mock-delay-ms and x-mock-chunk-delay-ms must be numbers, "
                                                 "x-mock-status an integer"}, status=400)
        adapter, servable = self.adapter_for(body) if handler in (self.chat, self.completion) else (None, True)
        if not servable:
            self.counts["failed"] += 1
            error = {"message": f"The model `{adapter}` does not exist.", "type": "NotFoundError", "code": 404}
            return self.reply(request, {"error": error}, status=404)
        if self.batching and handler in (self.chat, self.completion):
            return await self.serve_batched(request, body, handler, delay_ms, chunk_delay_ms, forced, adapter)
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            status = self._status(forced)
            if status >= 400:
                self.counts["failed"] += 1
                return self.reply(request, {"error": f"mock engine: injected failure {status}"}, status=status)
            if body.get("stream") is True and handler in (self.chat, self.completion):
                return await self.stream(request, body, handler, chunk_delay_ms, adapter)
            result: dict[str, Any] = handler(body)
            self._count(result.get("usage", {}))
            return self.reply(request, result, status=status, adapter=adapter)
        finally:
            self.running -= 1
            self._slots.release()

    def _status(self, forced: int | None) -> int:
        if forced is not None:
            return forced
        return self.behaviour.fail_status if self._rng.random() < self.behaviour.fail_rate else 200

    async def serve_batched(self, request: web.Request, body: dict[str, Any], handler: Any, delay_ms: float,
                            chunk_delay_ms: float, forced: int | None, adapter: str | None) -> web.StreamResponse:
        """A chat or completion request through the queueing model: `delay_ms` first
        (holding no slot), then admission, prefill and one step per token."""
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        status = self._status(forced)
        if status >= 400:
            self.counts["failed"] += 1
            return self.reply(request, {"error": f"mock engine: injected failure {status}"}, status=status)
        if body.get("stream") is True:
            return await self.stream(request, body, handler, chunk_delay_ms, adapter)
        result: dict[str, Any] = handler(body)
        prompt = (self._chat_prompt(body) if handler == self.chat else self._completion_prompt(body)).split()
        report: dict[str, str] | None = None
        async for _ in self.scheduler.generate(prompt, result["usage"]["completion_tokens"]):
            if report is None:  # the load this request met, itself included (as a streamed answer's headers)
                report = self.load_report(request)
        self._count(result.get("usage", {}))
        return self.reply(request, result, adapter=adapter, report=report)

    def _count(self, usage: dict[str, int]) -> None:
        self._completed.append(time.monotonic())
        self.counts["success"] += 1
        self.counts["prompt_tokens"] += usage.get("prompt_tokens", 0)
        self.counts["generation_tokens"] += usage.get("completion_tokens", 0)

    def _generate(self, prompt: str, max_tokens: Any) -> tuple[dict[str, int], list[str]]:
        """The usage block and the generated tokens (`tok0`, `tok1`, ...)."""
        completion = self.behaviour.completion_tokens
        if isinstance(max_tokens, int) and max_tokens >= 0:
            completion = min(completion, max_tokens)
        prompt_tokens = len(prompt.split())
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}, [f"tok{i}" for i in range(completion)]

    @staticmethod
    def _chat_prompt(body: dict[str, Any]) -> str:
        raw = body.get("messages")
        messages: list[Any] = raw if isinstance(raw, list) else []
        return " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))

    @staticmethod
    def _completion_prompt(body: dict[str, Any]) -> str:
        raw = body.get("prompt", "")
        return " ".join(map(str, raw)) if isinstance(raw, list) else str(raw)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        usage, tokens = self._generate(self._chat_prompt(body), body.get("max_tokens"))
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", self.identity.model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(tokens)},
                             "finish_reason": "length"}],
                "usage": usage}

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        usage, tokens = self._generate(self._completion_prompt(body), body.get("max_tokens"))
        return {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model", self.identity.model),
                "choices": [{"index": 0, "text": " ".join(tokens), "finish_reason": "length"}], "usage": usage}

    async def _tokens(self, prompt: str, count: int) -> AsyncIterator[int]:
        """When each token is ready: through the scheduler with the queueing model on,
        at once otherwise."""
        if self.batching:
            async for token in self.scheduler.generate(prompt.split(), count):
                yield token
        else:
            for token in range(1, count + 1):
                yield token

    async def stream(self, request: web.Request, body: dict[str, Any], handler: Any,
                     chunk_delay_ms: float, adapter: str | None = None) -> web.StreamResponse:
        """OpenAI's streaming: one `data: <chunk>` event per token (the chat's first one
        carries the role), one with the finish reason, with `stream_options.include_usage`
        a last one with empty choices and the `usage` (every other chunk has `usage:
        null`), then `data: [DONE]`. With the queueing model on, the response starts with
        the first token (after queueing and prefill), so time to first byte is time to
        first token."""
        chat = handler == self.chat
        prompt = self._chat_prompt(body) if chat else self._completion_prompt(body)
        usage, tokens = self._generate(prompt, body.get("max_tokens"))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache",
                                               **self.identity.headers})
        base: dict[str, Any] = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:12]}",
                                "object": "chat.completion.chunk" if chat else "text_completion",
                                "created": int(time.time()), "model": body.get("model", self.identity.model),
                                "served_by": self.identity.served_by(adapter)}
        if include_usage:
            base["usage"] = None

        def choice(text: str | None, finish: str | None) -> dict[str, Any]:
            if not chat:
                return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            delta: dict[str, Any] = {} if text is None else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        async def send(chunk: dict[str, Any] | str) -> None:
            data = chunk if isinstance(chunk, str) else json.dumps(chunk)
            await response.write(f"data: {data}\n\n".encode())

        async def start() -> None:
            response.headers.update(self.load_report(request))
            await response.prepare(request)
            if chat:
                await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                 "logprobs": None, "finish_reason": None}]})

        if not self.batching:
            await start()
        i = 0
        async for _ in self._tokens(prompt, len(tokens)):
            if not response.prepared:
                await start()
            if chunk_delay_ms > 0:
                await asyncio.sleep(chunk_delay_ms / 1000)
            await send({**base, "choices": [choice(tokens[i] if i == 0 else f" {tokens[i]}", None)]})
            i += 1
        if not response.prepared:
            await start()
        await send({**base, "choices": [choice(None, "length")]})
        if include_usage:
            await send({**base, "choices": [], "usage": usage})
        await send("[DONE]")
        await response.write_eof()
        self._count(usage)
        return response

    def infer(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("inputs")
        inputs: list[Any] = raw if isinstance(raw, list) else []
        outputs = [{"name": f"output-{i}", "datatype": "BYTES", "shape": [1], "data": [f"mock result for {inp.get('name', i)}"]}
                   for i, inp in enumerate(x for x in inputs if isinstance(x, dict))] or [
                   {"name": "output-0", "datatype": "BYTES", "shape": [1], "data": ["mock result"]}]
        return {"model_name": self.identity.model, "model_version": "mock", "id": body.get("id", uuid.uuid4().hex),
                "outputs": outputs}

    def metrics_text(self) -> str:
        label = f'model_name="{self.identity.model}"'
        cache = self.scheduler.prefix_cache
        running_adapters = ",".join(sorted(self.adapters))
        lines = [
            f"# HELP vllm:num_requests_running Requests being processed ({MOCK_NOTICE}).",
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{label}}} {self.num_running()}",
            "# HELP vllm:num_requests_waiting Requests waiting for a slot.",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{label}}} {self.num_waiting()}",
            "# HELP vllm:kv_cache_usage_perc Simulated KV-cache usage (1 = full).",
            "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{{{label}}} {self.kv_use()}",
            "# HELP vllm:prefix_cache_queries_total Prompt tokens looked up in the prefix cache.",
            "# TYPE vllm:prefix_cache_queries_total counter",
            f"vllm:prefix_cache_queries_total{{{label}}} {cache.queries}",
            "# HELP vllm:prefix_cache_hits_total Prompt tokens found in the prefix cache.",
            "# TYPE vllm:prefix_cache_hits_total counter", f"vllm:prefix_cache_hits_total{{{label}}} {cache.hits}",
            "# HELP vllm:time_per_output_token_seconds Time per output token after the first (queueing model).",
            "# TYPE vllm:time_per_output_token_seconds histogram",
            f'vllm:time_per_output_token_seconds_bucket{{{label},le="+Inf"}} {self.scheduler.tpot_count}',
            f"vllm:time_per_output_token_seconds_sum{{{label}}} {self.scheduler.tpot_sum}",
            f"vllm:time_per_output_token_seconds_count{{{label}}} {self.scheduler.tpot_count}",
            "# HELP vllm:lora_requests_info LoRA adapters loaded (running_lora_adapters).",
            "# TYPE vllm:lora_requests_info gauge",
            f'vllm:lora_requests_info{{running_lora_adapters="{running_adapters}",waiting_lora_adapters="",'
            f'max_lora="{max(1, len(self.adapters))}"}} 1',
            "# TYPE vllm:request_success_total counter", f"vllm:request_success_total{{{label}}} {self.counts['success']}",
            "# TYPE vllm:request_failure_total counter", f"vllm:request_failure_total{{{label}}} {self.counts['failed']}",
            "# TYPE vllm:prompt_tokens_total counter", f"vllm:prompt_tokens_total{{{label}}} {self.counts['prompt_tokens']}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{label}}} {self.counts['generation_tokens']}",
        ]
        return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m controller.engines.mock_engine", description=MOCK_NOTICE)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", required=True, help="model name reported in responses")
    p.add_argument("--infer", required=True, help="ModelInfer name reported in responses")
    p.add_argument("--namespace", default="default")
    p.add_argument("--replica", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="between chunks of a streamed answer")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--fail-status", type=int, default=500)
    p.add_argument("--completion-tokens", type=int, default=16)
    p.add_argument("--max-running", type=int, default=64, help="concurrent requests before queueing")
    p.add_argument("--seed", type=int, default=None, help="seed for fail_rate draws")
    p.add_argument("--adapters", default="", help="LoRA adapters loaded at start: name[=path],...")
    timing = p.add_argument_group("queueing model (controller/engines/mock_batching.py; off while both times are 0)")
    timing.add_argument("--decode-ms", type=float, default=0.0, help="one decode step with one request running")
    timing.add_argument("--prefill-ms-per-token", type=float, default=0.0, help="per uncached prompt token")
    timing.add_argument("--batch-slowdown", type=float, default=0.0, help="step time added per extra running request")
    timing.add_argument("--kv-slowdown", type=float, default=0.0, help="step time added at a full KV cache")
    timing.add_argument("--kv-tokens", type=int, default=0, help="KV-cache capacity in tokens (0: unlimited)")
    timing.add_argument("--speed", type=float, default=1.0, help="divides every simulated duration")
    timing.add_argument("--prefix-cache-tokens", type=int, default=0,
                        help="prefix-cache capacity in tokens (0: kv-tokens)")
    return p.parse_args(argv)


def parse_adapters(text: str) -> dict[str, str]:
    """`a,b=/path` → {"a": "a", "b": "/path"}."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, path = item.partition("=")
        found[name.strip()] = path.strip() or name.strip()
    return found


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    behaviour = Behaviour()
    try:
        behaviour.update({"delay_ms": args.delay_ms, "chunk_delay_ms": args.chunk_delay_ms, "fail_rate": args.fail_rate,
                          "fail_status": args.fail_status, "completion_tokens": args.completion_tokens,
                          "decode_ms": args.decode_ms, "prefill_ms_per_token": args.prefill_ms_per_token,
                          "batch_slowdown": args.batch_slowdown, "kv_slowdown": args.kv_slowdown,
                          "kv_tokens": args.kv_tokens, "speed": args.speed,
                          "prefix_cache_tokens": args.prefix_cache_tokens, "max_running": args.max_running})
    except ValueError as exc:
        raise SystemExit(f"mock_engine: {exc}") from exc
    engine = MockEngine(Identity(args.model, args.infer, args.namespace, args.replica), behaviour,
                        seed=args.seed, adapters=parse_adapters(args.adapters))
    # run_app handles SIGTERM/SIGINT: in-flight requests finish, then the process exits 0.
    web.run_app(engine.app(), host=args.host, port=args.port, print=None, access_log=None,
                shutdown_timeout=2.0)


if __name__ == "__main__":
    main()
