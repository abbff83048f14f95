"""Local rate limits (SPEC 3.1 `rateLimit`): one token bucket per ModelServer per Envoy.

A bucket belongs to a backend, not to a route: every route on the listener that sends to
that backend draws from it. So the listener's `local_ratelimit` filter itself carries the
rate-limit action (`rate_limits: [destination_cluster]`, Envoy ≥ 1.33) and one
descriptor per rate-limited cluster; routes need no per-route config, and a route edit
never touches the listener. Descriptors are keyed by the cluster the router picked, so a
weighted split charges each request to the backend it actually goes to.

Failover clusters: a route with a fallback sends to `failover/<primary>/<fallback>`, and
the filter only sees that name, so the pair's cluster gets a descriptor with the
primary's limit — a separate bucket of the same size. Traffic to one server reached both
directly and through a failover pair can thus pass up to twice its rate; the bucket
cannot be shared because the filter runs before the pair's cluster picks a host. Requests that fail
over to the fallback still count against the primary's bucket.

Over limit: 429 with `x-ratelimit-*` headers (draft 03).

Which clusters draw from which server's limit is `routing_engine.rate_limits`' rule,
shared with the rate-limit service's table.

Shared limits (`rateLimit.global`, ext) get no local bucket: the listener gets the
`envoy.filters.http.ratelimit` filter instead, asking the rate-limit service (cluster
`modelroute_ratelimit`, a static cluster of the bootstrap templates, like
`modelroute_admin`) in domain `modelroute`. Descriptors, all keyed by the destination
cluster (the service maps a cluster to its ModelServer, so a failover pair's cluster
draws from its primary's counter):

- `[(destination_cluster, C)]`: one request;
- token budgets only, the pre-check (never charged): `[(modelroute_tokens, budget),
  (destination_cluster, C)]` — refused while a budget of the window is spent — and
  `[(modelroute_tokens, size), (destination_cluster, C)]` with hits_addend = the request's
  Content-Length — refused when its estimated tokens do not fit the input budget. Envoy
  drops a descriptor whose hits_addend format is empty, so a chunked request (no
  Content-Length) gets only the `budget` check;
- token budgets only, `apply_on_stream_done`: `[(modelroute_tokens, input|output),
  (destination_cluster, C)]` with hits_addend = `usage.prompt_tokens` /
  `usage.completion_tokens` of the response in dynamic metadata `modelroute.usage`, which
  the usage reader every listener has (`translate.usage`) fills from JSON and streamed
  answers (or estimates for a stream without one): tokens are charged after the response.

The filter runs on every request of the listener (unlimited clusters are answered OK by
the service). `failure_mode_deny` is off: if the service itself cannot be reached within
`timeout`, requests pass (the service applies the configured fail-open/closed mode when
Redis is down, which it can answer quickly).
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2 as rl_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from routing_engine import ir
from routing_engine import names
from routing_engine.rate_limits import limited_destinations
from routing_engine.translate import usage
from routing_engine.translate.plugin import RANKS, HttpFilter, Plugin
from routing_engine.translate.xds import pack

LOCAL_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
DESCRIPTOR_KEY = "destination_cluster"  # the key Envoy gives the destination_cluster action
STAT_PREFIX = "modelroute_local_ratelimit"

GLOBAL_RATELIMIT_FILTER = "envoy.filters.http.ratelimit"
RATELIMIT_CLUSTER = "modelroute_ratelimit"  # static cluster of the bootstrap templates
DOMAIN = "modelroute"
GLOBAL_STAT_PREFIX = "modelroute_ratelimit"
SERVICE_TIMEOUT_MS = 250  # above the service's own Redis timeout, so it decides failures
TOKENS_KEY = "modelroute_tokens"  # descriptor entry: budget | size | input | output
USAGE_KEYS = {"input": usage.PROMPT_TOKENS, "output": usage.COMPLETION_TOKENS}  # what each charge reads


def token_bucket(limit: ir.RateLimit) -> token_bucket_pb2.TokenBucket:
    bucket = token_bucket_pb2.TokenBucket(
        max_tokens=max(limit.burst, 1), fill_interval=duration_pb2.Duration(seconds=1)
    )
    bucket.tokens_per_fill.value = max(limit.requests_per_second, 1)
    return bucket


def limited_clusters(listener: ir.Listener, *, shared: bool = False) -> dict[str, ir.RateLimit]:
    """Cluster name → the limit of requests sent to it, on this listener (local limits,
    or with `shared` the global ones)."""
    return {cluster: limit for cluster, (_, limit) in limited_destinations(listener, shared=shared).items()}


def _always() -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED),
        runtime_key="modelroute.local_ratelimit.enabled",
    )


class RateLimitPlugin(Plugin):
    name = "ratelimit"
    rank = RANKS["ratelimit"]

    def listener_facet(self, route: ir.Route) -> tuple[tuple[str, str], ...]:
        """What `limited_destinations` reads of a route: only its failover clusters (a
        direct destination is the backend's own cluster, there from `rate_limits`)."""
        return tuple((names.destination(wb), wb.backend) for wb in route.backends
                     if names.destination(wb) != names.cluster(wb.backend))

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        return [*self._local(listener), *global_filters(listener)]

    def _local(self, listener: ir.Listener) -> Sequence[HttpFilter]:
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


def _tokens_action(limit_config: rl_pb2.RateLimit, value: str) -> route_pb2.RateLimit:
    rate_limit = limit_config.rate_limits.add()
    generic = rate_limit.actions.add().generic_key
    generic.descriptor_key = TOKENS_KEY
    generic.descriptor_value = value
    rate_limit.actions.add().destination_cluster.SetInParent()
    return rate_limit


def global_filters(listener: ir.Listener) -> Sequence[HttpFilter]:
    """The shared (Redis-backed) limits of a listener: the ratelimit filter, with the
    token charges when some server has a token budget."""
    clusters = limited_clusters(listener, shared=True)
    if not clusters:
        return ()
    config = rl_pb2.RateLimit(
        domain=DOMAIN,
        stat_prefix=GLOBAL_STAT_PREFIX,
        failure_mode_deny=False,
        enable_x_ratelimit_headers=rl_pb2.RateLimit.DRAFT_VERSION_03,
        timeout=duration_pb2.Duration(nanos=SERVICE_TIMEOUT_MS * 1_000_000),
    )
    config.rate_limit_service.transport_api_version = config_source_pb2.V3
    config.rate_limit_service.grpc_service.envoy_grpc.cluster_name = RATELIMIT_CLUSTER
    config.rate_limits.add().actions.add().destination_cluster.SetInParent()
    if not any(l.input_tokens or l.output_tokens for l in clusters.values()):
        return [HttpFilter(name=GLOBAL_RATELIMIT_FILTER, typed_config=pack(config))]
    _tokens_action(config, "budget")
    _tokens_action(config, "size").hits_addend.format = "%REQ(content-length)%"
    for kind, key in USAGE_KEYS.items():
        charge = _tokens_action(config, kind)
        charge.apply_on_stream_done = True
        charge.hits_addend.format = usage.metadata(key)
    return [HttpFilter(name=GLOBAL_RATELIMIT_FILTER, typed_config=pack(config))]
