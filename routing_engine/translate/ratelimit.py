"""Local rate limits (SPEC 3.1 `rateLimit`): one token bucket per ModelServer per Envoy.

A bucket belongs to a backend, not to a route: every route on the listener that sends to
that backend draws from it. So the listener's `local_ratelimit` filter itself carries the
rate-limit action (`rate_limits: [destination_cluster]`, Envoy ≥ 1.33) and one
descriptor per rate-limited cluster; routes need no per-route config, and a route edit
never touches the listener. Descriptors are keyed by the cluster the router picked, so a
weighted split charges each request to the backend it actually goes to.

Failover clusters: a route with a fallback sends to `failover/<primary>/<fallback>`, and
the filter only sees that name, so the aggregate gets a descriptor with the primary's
limit — a separate bucket of the same size. Traffic to one server reached both directly
and through a failover pair can thus pass up to twice its rate; the bucket cannot be
shared because the filter runs before the aggregate picks a host. Requests that fail
over to the fallback still count against the primary's bucket.

Over limit: 429 with `x-ratelimit-*` headers (draft 03). `shared` limits (the Redis-backed
global service, `global_ratelimit` rank) are a later issue: they get no local bucket here.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2

from envoy.config.core.v3 import base_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from routing_engine import ir
from routing_engine.translate import names
from routing_engine.translate.plugin import RANKS, HttpFilter, Plugin
from routing_engine.translate.xds import pack

LOCAL_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
DESCRIPTOR_KEY = "destination_cluster"  # the key Envoy gives the destination_cluster action
STAT_PREFIX = "modelroute_local_ratelimit"


def token_bucket(limit: ir.RateLimit) -> token_bucket_pb2.TokenBucket:
    bucket = token_bucket_pb2.TokenBucket(
        max_tokens=max(limit.burst, 1), fill_interval=duration_pb2.Duration(seconds=1)
    )
    bucket.tokens_per_fill.value = max(limit.requests_per_second, 1)
    return bucket


def limited_clusters(listener: ir.Listener) -> dict[str, ir.RateLimit]:
    """Cluster name → the bucket size of requests sent to it, on this listener."""
    local = {backend: limit for backend, limit in listener.rate_limits if not limit.shared}
    clusters = {names.cluster(backend): limit for backend, limit in local.items()}
    for route in listener.routes:
        for wb in route.backends:
            if wb.backend in local:
                clusters.setdefault(names.destination(wb), local[wb.backend])
    return clusters


def _always() -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED),
        runtime_key="modelroute.local_ratelimit.enabled",
    )


class RateLimitPlugin(Plugin):
    name = "ratelimit"
    rank = RANKS["ratelimit"]

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        clusters = limited_clusters(listener)
        if not clusters:
            return ()
        config = lrl_pb2.LocalRateLimit(
            stat_prefix=STAT_PREFIX,
            filter_enabled=_always(),
            filter_enforced=_always(),
            enable_x_ratelimit_headers=common_pb2.DRAFT_VERSION_03,
        )
        config.filter_enforced.runtime_key = "modelroute.local_ratelimit.enforced"
        config.rate_limits.add().actions.add().destination_cluster.SetInParent()
        for cluster in sorted(clusters):
            descriptor = config.descriptors.add(token_bucket=token_bucket(clusters[cluster]))
            descriptor.entries.add(key=DESCRIPTOR_KEY, value=cluster)
        return [HttpFilter(name=LOCAL_RATELIMIT_FILTER, typed_config=pack(config))]
