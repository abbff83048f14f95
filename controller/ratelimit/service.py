"""Envoy's rate-limit service (`envoy.service.ratelimit.v3.RateLimitService`, gRPC) for
`rateLimit.global` (SPEC 3.1, ext): the counters live in Redis, so every Envoy draws from
one limit per ModelServer.

Descriptors (built by `routing_engine.translate.ratelimit`), domain `modelroute`:

- `[(destination_cluster, C)]` → `take` one request from the server's requests/s window;
- `[(modelroute_tokens, budget), (destination_cluster, C)]` → `peek` every token budget:
  each must have room for one more token (refused while a window's budget is spent);
- `[(modelroute_tokens, size), (destination_cluster, C)]`, hits = Content-Length →
  `peek` the input budget for the request's estimated tokens (bytes /
  `BYTES_PER_TOKEN`, at least 1). Neither pre-check is ever counted;
- `[(modelroute_tokens, input|output), (destination_cluster, C)]`, sent by Envoy when
  the stream is done with hits = the response's `usage` tokens → `charge` them.

Clusters without a shared limit (other servers on the same listener) are answered OK.
Limits come from the wiring (`set_limits`, from each gateway compile, handed over when
its status is published — just after the snapshot, so a brand-new limit can miss the
first milliseconds). Requests are counted in a 1 s sliding window of requestsPerSecond:
`burstSize` shapes only local buckets. Tokens are known from the answer's `usage`: a
JSON response's, or a streamed (SSE) answer's final usage chunk (read by Envoy as the
stream passes; a stream without one is charged an estimate, see
`routing_engine.translate.ratelimit`); an aborted stream is charged only if its usage
had already passed.

Redis failures: every call has `redis_timeout`; after a failure the service answers
from its `fail_open` setting without touching Redis for `retry_interval` (so a dead
Redis costs no latency), then tries again. Fail-open (default) answers OK; fail-closed
answers OVER_LIMIT for limited clusters only. Token charges made while Redis is down are
lost (counted in `modelroute_ratelimit_redis_errors_total`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
import redis.asyncio as aioredis
from google.protobuf import duration_pb2
from prometheus_client import Counter, Gauge
from redis.backoff import NoBackoff
from redis.retry import Retry

from controller.ratelimit.limits import ClusterLimit, describe
from controller.ratelimit.windows import Charge, Outcome, SlidingWindows, counter_key
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

log = logging.getLogger("modelroute.ratelimit")

DOMAIN = "modelroute"
CLUSTER_KEY = "destination_cluster"
TOKENS_KEY = "modelroute_tokens"
BYTES_PER_TOKEN = 4  # request bytes per token, for the pre-check estimate (OpenAI's rule of thumb)
REQUEST_WINDOW_MS = 1000
_UNITS = {"second": rls_pb2.RateLimitResponse.RateLimit.SECOND, "minute": rls_pb2.RateLimitResponse.RateLimit.MINUTE,
          "hour": rls_pb2.RateLimitResponse.RateLimit.HOUR, "day": rls_pb2.RateLimitResponse.RateLimit.DAY}

DECISIONS = Counter("modelroute_ratelimit_decisions_total", "Rate-limit service answers",
                    ["result"])  # ok | over_limit | failure_allowed | failure_denied
REDIS_ERRORS = Counter("modelroute_ratelimit_redis_errors_total", "Redis calls that failed or timed out")
REDIS_UP = Gauge("modelroute_ratelimit_redis_up", "1 while the last Redis call succeeded")


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # Debian's redis-server service


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    redis_url: str | None = None  # None: DEFAULT_REDIS_URL (embedded mode starts its own)
    fail_open: bool = True  # Redis down: allow (default) or refuse limited requests
    redis_timeout: float = 0.1  # seconds; below the Envoy filter's timeout (250 ms)
    retry_interval: float = 0.5  # after a Redis failure, answer by the mode this long

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServiceOptions:
        """`MODELROUTE_REDIS_URL` (unset: embedded mode starts its own redis-server) and
        `MODELROUTE_RATELIMIT_FAILURE_MODE` = `open` (default) | `closed`."""
        mode = env.get("MODELROUTE_RATELIMIT_FAILURE_MODE", "open").strip().lower()
        if mode not in ("open", "closed"):
            raise ValueError(f"MODELROUTE_RATELIMIT_FAILURE_MODE must be open or closed, not {mode!r}")
        return cls(redis_url=env.get("MODELROUTE_REDIS_URL") or None, fail_open=mode == "open")


@dataclass(slots=True)
class _Plan:
    """The charges of one descriptor, and the limit reported for it."""

    charges: list[Charge] = field(default_factory=list)
    limit: int = 0
    unit: str = "second"


# xds-protos ships no stubs (docs/decisions.md, "Types"): its generated servicer base is Any.
class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, options: ServiceOptions = ServiceOptions()) -> None:
        self.options = options
        self.client = aioredis.Redis.from_url(
            options.redis_url or DEFAULT_REDIS_URL, socket_timeout=options.redis_timeout,
            socket_connect_timeout=options.redis_timeout, retry=Retry(NoBackoff(), 0))
        self.windows = SlidingWindows(self.client)
        self._limits: Mapping[str, ClusterLimit] = {}
        self._down_until = 0.0

    def set_limits(self, limits: Mapping[str, ClusterLimit]) -> None:
        if dict(limits) != dict(self._limits):
            log.info("rate limits: %s", describe(limits) or "none")
        self._limits = dict(limits)

    async def close(self) -> None:
        await self.client.aclose()

    def plan(self, request: rls_pb2.RateLimitRequest) -> list[_Plan]:
        default_hits = request.hits_addend or 1
        plans: list[_Plan] = []
        for descriptor in request.descriptors:
            entries = {e.key: e.value for e in descriptor.entries}
            hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else default_hits
            plans.append(self._plan_one(entries, hits))
        return plans

    def _plan_one(self, entries: Mapping[str, str], hits: int) -> _Plan:
        limit = self._limits.get(entries.get(CLUSTER_KEY, ""))
        if limit is None:
            return _Plan()
        kind = entries.get(TOKENS_KEY)
        if kind is None:
            key = counter_key(limit.server, "requests")
            return _Plan([Charge(key, REQUEST_WINDOW_MS, limit.requests_per_second, hits, "take")],
                         limit.requests_per_second, "second")
        window = limit.token_window_ms
        budgets = {"input": limit.input_tokens, "output": limit.output_tokens}
        plan = _Plan(unit=limit.token_unit)
        if kind in ("budget", "size"):
            need = {"input": 1, "output": 1} if kind == "budget" else {"input": max(1, math.ceil(hits / BYTES_PER_TOKEN))}
            for name, budget in budgets.items():
                if budget and name in need:
                    plan.charges.append(Charge(counter_key(limit.server, f"{name}_tokens"), window, budget,
                                               need[name], "peek"))
                    plan.limit = budget if not plan.limit else min(plan.limit, budget)
        elif kind in budgets and budgets[kind]:
            plan.charges.append(Charge(counter_key(limit.server, f"{kind}_tokens"), window, budgets[kind] or 0,
                                       hits, "charge"))
            plan.limit = budgets[kind] or 0
        return plan

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest,  # noqa: N802 (gRPC name)
                              context: grpc.aio.ServicerContext[rls_pb2.RateLimitRequest, rls_pb2.RateLimitResponse],
                              ) -> rls_pb2.RateLimitResponse:
        plans = self.plan(request) if request.domain == DOMAIN else [_Plan() for _ in request.descriptors]
        charges = [c for p in plans for c in p.charges]
        outcomes = await self._decide(charges)
        response = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        if outcomes is None:  # Redis unavailable: the configured mode decides
            denied = not self.options.fail_open and any(c.mode != "charge" for c in charges)
            for _ in plans:
                response.statuses.add(code=rls_pb2.RateLimitResponse.OVER_LIMIT if denied else rls_pb2.RateLimitResponse.OK)
            if denied:
                response.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
            if charges:
                DECISIONS.labels("failure_denied" if denied else "failure_allowed").inc()
            return response
        it = iter(outcomes)
        for plan in plans:
            status = response.statuses.add(code=rls_pb2.RateLimitResponse.OK)
            results = [next(it) for _ in plan.charges]
            if not results:
                continue
            _describe_status(status, plan, results)
            if status.code == rls_pb2.RateLimitResponse.OVER_LIMIT:
                response.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
        if charges:
            over = response.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
            DECISIONS.labels("over_limit" if over else "ok").inc()
        return response

    async def _decide(self, charges: list[Charge]) -> list[Outcome] | None:
        if not charges:
            return []
        if time.monotonic() < self._down_until:
            return None
        try:
            outcomes = await asyncio.wait_for(self.windows.decide(charges), self.options.redis_timeout * 2)
        except (aioredis.RedisError, OSError, asyncio.TimeoutError) as err:
            REDIS_ERRORS.inc()
            REDIS_UP.set(0)
            if not self._down_until:
                log.warning("redis unavailable (%s: %s): answering %s, retrying every %.1fs", type(err).__name__, err,
                            "OK (fail-open)" if self.options.fail_open else "OVER_LIMIT (fail-closed)",
                            self.options.retry_interval)
            self._down_until = time.monotonic() + self.options.retry_interval
            # Pooled connections to a dead Redis are dead too: the next try starts afresh.
            await self.client.connection_pool.disconnect()
            return None
        if self._down_until:
            log.info("redis reachable again: counting resumes")
            self._down_until = 0.0
        REDIS_UP.set(1)
        return outcomes


def _describe_status(status: rls_pb2.RateLimitResponse.DescriptorStatus, plan: _Plan,
                     results: list[Outcome]) -> None:
    """The most constraining counter of the descriptor: what the x-ratelimit headers show."""
    worst = min(results, key=lambda o: (o.allowed, o.remaining))
    if not worst.allowed:
        status.code = rls_pb2.RateLimitResponse.OVER_LIMIT
    status.current_limit.requests_per_unit = plan.limit
    status.current_limit.unit = _UNITS[plan.unit]
    status.limit_remaining = worst.remaining
    status.duration_until_reset.CopyFrom(duration_pb2.Duration(seconds=worst.reset_ms // 1000,
                                                               nanos=(worst.reset_ms % 1000) * 1_000_000))


@dataclass
class RunningService:
    service: RateLimitService
    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float = 1.0) -> None:
        await self.server.stop(grace)
        await self.service.close()


async def start_ratelimit_service(address: str = "127.0.0.1:0", options: ServiceOptions = ServiceOptions(), *,
                                  credentials: grpc.ServerCredentials | None = None) -> RunningService:
    """Serve on `address` (`host:0` picks a free port; the bound port is returned); with
    `credentials` (mTLS, `xds_server.tls`) only clients with a certificate of our CA."""
    service = RateLimitService(options)
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(service, server)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    log.info("rate-limit service on %s (port %d), redis=%s, %s", address, port, options.redis_url,
             "fail-open" if options.fail_open else "fail-closed")
    return RunningService(service, server, port)


__all__ = ["ClusterLimit", "RateLimitService", "RunningService", "ServiceOptions", "start_ratelimit_service"]
