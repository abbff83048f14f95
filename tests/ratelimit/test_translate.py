"""The engine's side of shared limits: which filters and descriptors a listener gets, and
the API's rules for token budgets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2 as rl_pb2
from routing_engine import ir
from routing_engine.api.resources import ObjectKey, RateLimitSpec
from routing_engine.translate.ratelimit import (
    GLOBAL_RATELIMIT_FILTER,
    LOCAL_RATELIMIT_FILTER,
    RATELIMIT_CLUSTER,
    RateLimitPlugin,
)

OWNER = ObjectKey("ModelServer", "default", "m")


def _listener(*limits: tuple[str, ir.RateLimit]) -> ir.Listener:
    routes = tuple(
        ir.Route(name=f"r{n}", owner=OWNER, match=ir.RouteMatch(ir.PathMatch("segment_prefix", f"/{n}")),
                 backends=(ir.WeightedBackend(backend, 1),), timeout_ms=1000, retries=0)
        for n, (backend, _) in enumerate(limits))
    return ir.Listener(name="listener/80", address="0.0.0.0", port=80, routes=routes, rate_limits=tuple(sorted(limits)))


def _names(listener: ir.Listener) -> list[str]:
    return [f.name for f in RateLimitPlugin().http_filters(listener)]


def test_local_limits_keep_only_the_local_bucket() -> None:
    assert _names(_listener(("modelserver/default/a", ir.RateLimit(5, 5)))) == [LOCAL_RATELIMIT_FILTER]


def test_a_global_limit_asks_the_service_per_destination_cluster_and_never_denies_on_errors() -> None:
    listener = _listener(("modelserver/default/a", ir.RateLimit(5, 5)), ("modelserver/default/g", ir.RateLimit(9, 9, True)))
    filters = RateLimitPlugin().http_filters(listener)
    assert [f.name for f in filters] == [LOCAL_RATELIMIT_FILTER, GLOBAL_RATELIMIT_FILTER]
    config = rl_pb2.RateLimit()
    assert filters[1].typed_config.Unpack(config)
    assert config.domain == "modelroute"
    assert config.rate_limit_service.grpc_service.envoy_grpc.cluster_name == RATELIMIT_CLUSTER
    assert not config.failure_mode_deny and config.timeout.ToMilliseconds() == 250
    assert config.enable_x_ratelimit_headers == rl_pb2.RateLimit.DRAFT_VERSION_03
    assert len(config.rate_limits) == 1
    assert config.rate_limits[0].actions[0].HasField("destination_cluster")


def test_token_budgets_add_prechecks_and_charges_on_stream_done_from_the_usage_reader() -> None:
    limit = ir.RateLimit(9, 9, True, input_tokens=1000, output_tokens=None, token_unit="hour")
    filters = RateLimitPlugin().http_filters(_listener(("modelserver/default/t", limit)))
    assert [f.name for f in filters] == [GLOBAL_RATELIMIT_FILTER]  # usage: translate.usage, on every listener
    config = rl_pb2.RateLimit()
    filters[0].typed_config.Unpack(config)
    kinds = [(r.actions[0].generic_key.descriptor_value if r.actions[0].HasField("generic_key") else "request",
              r.apply_on_stream_done, r.hits_addend.format) for r in config.rate_limits]
    assert kinds == [("request", False, ""), ("budget", False, ""), ("size", False, "%REQ(content-length)%"),
                     ("input", True, "%DYNAMIC_METADATA(modelroute.usage:prompt_tokens)%"),
                     ("output", True, "%DYNAMIC_METADATA(modelroute.usage:completion_tokens)%")]


def test_token_budgets_require_a_shared_limit() -> None:
    with pytest.raises(ValidationError, match="inputTokensPerUnit"):
        RateLimitSpec.model_validate({"enabled": True, "requestsPerSecond": 5, "inputTokensPerUnit": 10})
    spec = RateLimitSpec.model_validate({"enabled": True, "requestsPerSecond": 5, "global": True,
                                         "outputTokensPerUnit": 10, "unit": "day"})
    assert (spec.output_tokens_per_unit, spec.unit, spec.input_tokens_per_unit) == (10, "day", None)
    with pytest.raises(ValidationError):
        RateLimitSpec.model_validate({"enabled": True, "requestsPerSecond": 5, "global": True, "unit": "week"})
