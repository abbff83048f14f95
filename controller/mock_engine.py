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

Run: `python -m controller.mock_engine --port P --model NAME --infer NAME --replica N`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web

MOCK_NOTICE = "modelroute mock inference engine (not a real model)"
# Headers only a proxy adds: a request carrying one did not come to the replica directly.
PROXIED = ("x-forwarded-proto", "x-forwarded-for", "x-envoy-internal")


@dataclass
class Behaviour:
    """What the mock does to each request; changeable at run time."""

    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0  # between two chunks of a streamed answer
    fail_rate: float = 0.0
    fail_status: int = 500
    completion_tokens: int = 16
    healthy: bool = True  # False: GET /health answers 503, so readiness drops (failover demos)

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

    def served_by(self) -> dict[str, Any]:
        return {"modelinfer": self.infer, "namespace": self.namespace, "replica": self.replica,
                "model": self.model, "engine": "mock"}


class MockEngine:
    """Request handling and the counters behind `/metrics`."""

    def __init__(self, identity: Identity, behaviour: Behaviour, *, max_running: int = 64,
                 seed: int | None = None) -> None:
        self.identity = identity
        self.behaviour = behaviour
        self.max_running = max_running
        self._slots = asyncio.Semaphore(max_running)
        self._rng = random.Random(seed)
        self.running = 0
        self.waiting = 0
        self.counts = {"success": 0, "failed": 0, "prompt_tokens": 0, "generation_tokens": 0}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._direct_only])
        app.router.add_post("/_mock/behaviour", self.set_behaviour)
        app.router.add_get("/_mock/behaviour", self.get_behaviour)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    @web.middleware
    async def _direct_only(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_mock/") and any(h in request.headers for h in PROXIED):
            return self.reply(request, {"error": "the mock's control endpoint answers direct requests only, "
                                                 "not ones through a proxy"}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    def reply(self, request: web.Request, body: dict[str, Any], status: int = 200) -> web.Response:
        body = {**body, "served_by": self.identity.served_by(), "path": request.path_qs}
        return web.json_response(body, status=status, headers=self.identity.headers)

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
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            status = forced if forced is not None else (
                self.behaviour.fail_status if self._rng.random() < self.behaviour.fail_rate else 200)
            if status >= 400:
                self.counts["failed"] += 1
                return self.reply(request, {"error": f"mock engine: injected failure {status}"}, status=status)
            if body.get("stream") is True and handler in (self.chat, self.completion):
                return await self.stream(request, body, handler, chunk_delay_ms)
            result: dict[str, Any] = handler(body)
            self._count(result.get("usage", {}))
            return self.reply(request, result, status=status)
        finally:
            self.running -= 1
            self._slots.release()

    def _count(self, usage: dict[str, int]) -> None:
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

    async def stream(self, request: web.Request, body: dict[str, Any], handler: Any,
                     chunk_delay_ms: float) -> web.StreamResponse:
        """OpenAI's streaming: one `data: <chunk>` event per token (the chat's first one
        carries the role), one with the finish reason, with `stream_options.include_usage`
        a last one with empty choices and the `usage` (every other chunk has `usage:
        null`), then `data: [DONE]`."""
        chat = handler == self.chat
        prompt = self._chat_prompt(body) if chat else self._completion_prompt(body)
        usage, tokens = self._generate(prompt, body.get("max_tokens"))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache",
                                               **self.identity.headers})
        await response.prepare(request)
        base: dict[str, Any] = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:12]}",
                                "object": "chat.completion.chunk" if chat else "text_completion",
                                "created": int(time.time()), "model": body.get("model", self.identity.model),
                                "served_by": self.identity.served_by()}
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

        if chat:
            await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}]})
        for i, token in enumerate(tokens):
            if chunk_delay_ms > 0:
                await asyncio.sleep(chunk_delay_ms / 1000)
            await send({**base, "choices": [choice(token if i == 0 else f" {token}", None)]})
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
        kv = min(1.0, self.running / self.max_running)
        lines = [
            f"# HELP vllm:num_requests_running Requests being processed ({MOCK_NOTICE}).",
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{label}}} {self.running}",
            "# HELP vllm:num_requests_waiting Requests waiting for a slot.",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{label}}} {self.waiting}",
            "# HELP vllm:kv_cache_usage_perc Simulated KV-cache usage (1 = full).",
            "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{{{label}}} {kv}",
            "# TYPE vllm:request_success_total counter", f"vllm:request_success_total{{{label}}} {self.counts['success']}",
            "# TYPE vllm:request_failure_total counter", f"vllm:request_failure_total{{{label}}} {self.counts['failed']}",
            "# TYPE vllm:prompt_tokens_total counter", f"vllm:prompt_tokens_total{{{label}}} {self.counts['prompt_tokens']}",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{label}}} {self.counts['generation_tokens']}",
        ]
        return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m controller.mock_engine", description=MOCK_NOTICE)
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    behaviour = Behaviour()
    try:
        behaviour.update({"delay_ms": args.delay_ms, "chunk_delay_ms": args.chunk_delay_ms, "fail_rate": args.fail_rate,
                          "fail_status": args.fail_status, "completion_tokens": args.completion_tokens})
    except ValueError as exc:
        raise SystemExit(f"mock_engine: {exc}") from exc
    engine = MockEngine(Identity(args.model, args.infer, args.namespace, args.replica), behaviour,
                        max_running=args.max_running, seed=args.seed)
    # run_app handles SIGTERM/SIGINT: in-flight requests finish, then the process exits 0.
    web.run_app(engine.app(), host=args.host, port=args.port, print=None, access_log=None,
                shutdown_timeout=2.0)


if __name__ == "__main__":
    main()
