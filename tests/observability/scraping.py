"""What the scrape tests of both run modes share: the series the control plane promises,
a world that produces every one of them (a canary split, streamed and plain answers, a
5xx, a server Envoy refuses), and a bounded scrape of the admin `/metrics`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from google.protobuf import any_pb2

from routing_engine import ir
from routing_engine.plugins import HttpFilter, Plugin
from tests.observability.promql import scrape

# Every series named by issue #16's "Control-plane metrics" (sample names: a histogram by
# its buckets), with a label value some of them must carry.
EXPECTED = (
    # the xDS server: pushes, push → ACK latency, NACKs by type, streams, snapshot builds
    "modelroute_xds_pushes_total", "modelroute_xds_push_bytes_total", "modelroute_xds_acks_total",
    "modelroute_xds_ack_latency_seconds_bucket", "modelroute_xds_nacks_total", "modelroute_xds_connected_streams",
    "modelroute_xds_snapshot_build_seconds_bucket",
    # edit → served, compile time, NACKs by object, objects, informer lag, leader
    "modelroute_edit_to_served_seconds_bucket", "modelroute_compile_duration_seconds_bucket",
    "modelroute_object_nacks_total", "modelroute_objects", "modelroute_informer_lag_seconds_bucket",
    "modelroute_leader",
    # rate-limit decisions (the shared service) and the process
    "modelroute_ratelimit_decisions_total", "modelroute_ratelimit_redis_errors_total", "process_cpu_seconds_total",
    # canary weight and verdicts
    "modelroute_canary_weight_percent", "modelroute_canary_phase", "modelroute_canary_decisions_total",
    "modelroute_canary_failed_intervals", "modelroute_canary_insufficient_traffic", "modelroute_canary_p_value",
    # per variant: requests, success (by code), latency, time to first token, tokens
    "modelroute_variant_requests_total", "modelroute_variant_upstream_responses_total",
    "modelroute_variant_request_duration_seconds_bucket", "modelroute_variant_time_to_first_token_seconds_bucket",
    "modelroute_variant_prompt_tokens_bucket", "modelroute_variant_completion_tokens_bucket",
)
VARIANTS = ("default/v1", "default/v2")


class RefusedByEnvoy(Plugin):
    """A listener carrying a route of an object named `poison*` gets an HTTP filter Envoy
    has no implementation for: Envoy NACKs it (what `modelroute_*nacks_total` count)."""

    name = "refused-by-envoy"
    rank = 450

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        if any(r.owner.name.startswith("poison") for r in listener.routes):
            return [HttpFilter(name="modelroute.test.refused",
                               typed_config=any_pb2.Any(type_url="type.googleapis.com/modelroute.test.Refused"))]
        return ()


def canary_route(*, interval: str = "1s") -> dict[str, Any]:
    """50/50 between v1 and v2 on the front door /v1, judged every `interval` with a
    minRequests no test reaches (so it holds: the warning series is 1)."""
    return {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute", "metadata": {"name": "chat"},
            "spec": {"path": "/v1", "routes": [{"destination": {"modelServerRef": {"name": "v1"}}},
                                               {"destination": {"modelServerRef": {"name": "v2"}}}],
                     "canary": {"enabled": True, "trafficSplit": {"stable": 50, "canary": 50},
                                "analysis": {"threshold": 50, "interval": interval, "minRequests": 100_000}}}}


async def drive(port: int) -> None:
    """Streamed chat answers with usage (time to first token, tokens), plain ones, and
    5xx answers, through the gateway until both variants had each kind."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": "llama", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while len(seen) < 6:
            assert time.monotonic() < deadline, f"the gateway did not answer every kind from both variants: {seen}"
            for kind, payload, headers in (
                    ("stream", {**body, "stream": True, "stream_options": {"include_usage": True}}, {}),
                    ("plain", body, {}), ("error", body, {"x-mock-status": "503"})):
                async with session.post(url, json=payload, headers=headers) as response:
                    await response.read()
                    who = response.headers.get("x-modelinfer", "")
                    if (kind == "error") == (response.status == 503) and who:
                        seen.add((kind, who))


async def metrics_text(admin_port: int) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/plain")
            return await response.text()


def lacking(text: str) -> list[str]:
    """What of EXPECTED (and the per-variant codes) the scrape does not hold yet."""
    series = scrape(text)
    gaps = [name for name in EXPECTED if name not in series]
    for variant in VARIANTS:
        for code in ("200", "503"):
            if f'modelroute_variant_requests_total{{code="{code}",modelserver="{variant}"}}' not in text:
                gaps.append(f"requests of {variant} with code {code}")
        if f'modelroute_variant_completion_tokens_count{{modelserver="{variant}"}}' not in text:
            gaps.append(f"tokens of {variant}")
    if 'modelroute_object_nacks_total{kind="ModelServer",object="default/poison"}' not in text:
        gaps.append("the NACK of ModelServer default/poison")
    return gaps


async def scrape_until_complete(admin_port: int, *, timeout: float = 15.0) -> str:
    """The admin /metrics once it holds every promised series (stats arrive with the
    gateways' next flush)."""
    deadline = time.monotonic() + timeout
    while True:
        text = await metrics_text(admin_port)
        gaps = lacking(text)
        if not gaps:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics still lacks {json.dumps(gaps)} after {timeout}s")
        await asyncio.sleep(0.25)
