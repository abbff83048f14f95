"""The rate-limit service's answers to Envoy's descriptors, against a real Redis (the
gRPC handler called directly; Envoy end to end is in test_envoy_e2e)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY, generate_latest

from controller.ratelimit.limits import ClusterLimit, cluster_limits
from controller.ratelimit.service import RateLimitService, ServiceOptions
from envoy.service.ratelimit.v3 import rls_pb2
from routing_engine import engine
from routing_engine.world import Target, World
from tests.ratelimit.conftest import RedisProcess
from tests.resolve.build import route, server, to

OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
CLUSTER = "modelserver/default/m"


def _request(*descriptors: tuple[list[tuple[str, str]], int | None], domain: str = "modelroute") -> rls_pb2.RateLimitRequest:
    request = rls_pb2.RateLimitRequest(domain=domain)
    for entries, hits in descriptors:
        d = request.descriptors.add()
        for key, value in entries:
            d.entries.add(key=key, value=value)
        if hits is not None:
            d.hits_addend.value = hits
    return request


REQUEST = ([("destination_cluster", CLUSTER)], None)


def _tokens(kind: str, hits: int) -> tuple[list[tuple[str, str]], int]:
    return [("modelroute_tokens", kind), ("destination_cluster", CLUSTER)], hits


@pytest.fixture
async def service(redis_server: RedisProcess) -> AsyncIterator[RateLimitService]:
    svc = RateLimitService(ServiceOptions(redis_url=redis_server.url))
    svc.set_limits({CLUSTER: ClusterLimit("default/m", 3, input_tokens=100, output_tokens=50, token_unit="minute")})
    try:
        yield svc
    finally:
        await svc.close()


async def test_requests_over_the_limit_are_refused_with_the_limit_described(service: RateLimitService) -> None:
    answers = [await service.ShouldRateLimit(_request(REQUEST), None) for _ in range(4)]
    assert [a.overall_code for a in answers] == [OK, OK, OK, OVER]
    last = answers[-1].statuses[0]
    assert (last.code, last.current_limit.requests_per_unit, last.limit_remaining) == (OVER, 3, 0)
    assert last.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.SECOND
    assert 0 < last.duration_until_reset.ToMilliseconds() <= 1000


async def test_unlimited_clusters_and_other_domains_pass_untouched(service: RateLimitService) -> None:
    other = _request(([("destination_cluster", "modelserver/default/free")], None))
    for _ in range(5):
        assert (await service.ShouldRateLimit(other, None)).overall_code == OK
        assert (await service.ShouldRateLimit(_request(REQUEST, domain="else"), None)).overall_code == OK
    assert [k async for k in service.client.scan_iter()] == []


async def test_tokens_are_charged_after_the_response_and_prechecked_by_size(service: RateLimitService) -> None:
    small = _request(REQUEST, _tokens("budget", 1), _tokens("size", 40))  # 40 bytes ≈ 10 tokens: fits 100
    assert (await service.ShouldRateLimit(small, None)).overall_code == OK
    big = _request(_tokens("budget", 1), _tokens("size", 404))  # ≈ 101 tokens: more than the input budget
    answer = await service.ShouldRateLimit(big, None)
    assert (answer.overall_code, answer.statuses[0].code, answer.statuses[1].code) == (OVER, OK, OVER)
    charged = await service.ShouldRateLimit(_request(_tokens("input", 30), _tokens("output", 60)), None)
    assert charged.overall_code == OK  # a charge is never refused, even past the budget
    # The output budget (50) is spent: refused whatever the size (a chunked request has none).
    answer = await service.ShouldRateLimit(_request(REQUEST, _tokens("budget", 1)), None)
    assert answer.overall_code == OVER
    assert answer.statuses[0].code == OK and answer.statuses[1].code == OVER
    assert answer.statuses[1].current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.MINUTE
    assert answer.statuses[1].limit_remaining == 0
    # The refused requests did not spend request slots: 2 more of 3 fit this second.
    assert [(await service.ShouldRateLimit(_request(REQUEST), None)).overall_code for _ in range(2)] == [OK, OK]


@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_down_answers_by_the_mode_quickly(redis_server: RedisProcess, fail_open: bool) -> None:
    svc = RateLimitService(ServiceOptions(redis_url=redis_server.url, fail_open=fail_open, retry_interval=0.2))
    svc.set_limits({CLUSTER: ClusterLimit("default/m", 100)})
    try:
        assert (await svc.ShouldRateLimit(_request(REQUEST), None)).overall_code == OK
        redis_server.kill()
        started = time.monotonic()
        for _ in range(20):
            answer = await svc.ShouldRateLimit(_request(REQUEST), None)
            assert answer.overall_code == (OK if fail_open else OVER)
        assert time.monotonic() - started < 2.0  # one timeout at most, then the mode answers
        exposed = generate_latest(REGISTRY).decode()  # what the control plane's /metrics serves
        assert "modelroute_ratelimit_redis_up 0.0" in exposed
        result = "failure_allowed" if fail_open else "failure_denied"
        assert f'modelroute_ratelimit_decisions_total{{result="{result}"}}' in exposed
        free = _request(([("destination_cluster", "modelserver/default/free")], None))
        assert (await svc.ShouldRateLimit(free, None)).overall_code == OK  # unlimited servers never refused
        redis_server.start()
        await asyncio.sleep(0.3)
        assert (await svc.ShouldRateLimit(_request(REQUEST), None)).overall_code == OK
        assert await svc.client.keys("modelroute:rl:*")  # counting again
    finally:
        await svc.close()


def test_limits_follow_the_compiled_gateway_failover_clusters_included() -> None:
    limit = {"enabled": True, "requestsPerSecond": 7, "global": True, "outputTokensPerUnit": 500, "unit": "hour"}
    objects = [server("m", "/m", rateLimit=limit), server("b", "/b"),
               route("r", {"routes": [to("m")], "fallback": {"modelServerRef": {"name": "b"}}})]
    compiled = engine.compile(World(tuple(objects)), Target())
    assert compiled.gateway is not None
    limits = cluster_limits([compiled.gateway])
    assert set(limits) == {"modelserver/default/m", "failover/modelserver/default/m/modelserver/default/b"}
    assert {l.server for l in limits.values()} == {"default/m"}  # one counter for both
    assert limits["modelserver/default/m"].token_window_ms == 3_600_000
    assert (limits["modelserver/default/m"].requests_per_second, limits["modelserver/default/m"].output_tokens) == (7, 500)


def test_options_from_the_environment() -> None:
    assert ServiceOptions.from_env({}) == ServiceOptions(redis_url=None, fail_open=True)
    closed = ServiceOptions.from_env({"MODELROUTE_REDIS_URL": "redis://10.0.0.5:6379/1",
                                      "MODELROUTE_RATELIMIT_FAILURE_MODE": "closed"})
    assert (closed.redis_url, closed.fail_open) == ("redis://10.0.0.5:6379/1", False)
    with pytest.raises(ValueError, match="open or closed"):
        ServiceOptions.from_env({"MODELROUTE_RATELIMIT_FAILURE_MODE": "maybe"})
