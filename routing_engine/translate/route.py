"""IR routes → Envoy `Route` messages, and a listener's routes → one RouteConfiguration.

One RouteConfiguration per listener with a single virtual host `*`: a ModelRoute edit
changes exactly one RDS resource per listener it is installed on, and listeners (LDS)
never change for a route edit, so Envoy never drains connections for one.

Matching (SPEC 3.3): `segment_prefix` → `path_separated_prefix` (whole segments, never
`/ab` for `/a`), `exact` → `path`, `glob` → an RE2 `safe_regex` where `*` is `[^/]*`.
Header and query-parameter values use `StringMatcher`; the OpenAI `model` is matched on
dynamic metadata the `model_match` plugin fills in. Several backends become
`weighted_clusters` with weights reduced by their gcd (exact ratios, no rounding; Envoy
normalizes by the sum). Zero weights are kept so a canary at 0% still has its cluster
referenced (and its stats) — Envoy accepts them as long as the sum is positive.
A route with a `hash_header` (sticky canary, ext) picks its weighted cluster from a hash
of that header (`hash_policy` + `WeightedCluster.use_hash_policy`, Envoy >= 1.36): the
same user lands in the same variant on every Envoy. Its weights are kept as given (not
divided by their gcd) so `hash % total` keeps its meaning as a canary grows: users only
ever move from stable to canary, never back.
Retries only cover failures that cannot have reached a model (SPEC 3.1), so no GPU work
is done twice, and each retry goes to another replica (`previous_hosts`).
A route for a LoRA adapter (issue 18) picks only endpoints whose `envoy.lb` metadata lists
the adapter (`metadata_match`, for the cluster's subset load balancer). A route to a
prefixAffinity backend hashes `PREFIX_HASH_HEADER`, which the `prefix_affinity` filter
sets from the prompt; with a sticky canary the sticky header's hash is the only one (it
must keep picking the variant alone), so such a route keeps users, not prefixes, together.

Timeouts suit streams: `timeout` (routing.timeout, default 60 s) is how long the model
may stay silent — before its first byte, or between two chunks of a streamed answer —
not a cap on the whole answer, so a generation that keeps sending is never cut, and a
stalled one is. Envoy's route `timeout` (the whole response) is therefore off (0) and the
router's `per_try_idle_timeout` enforces silence on each attempt: 504 before the answer
started, a reset of the stream after. The connection manager's idle timer (it also
watches the client) is set `STALL_MARGIN_MS` beyond it, so an upstream stall is answered
by the router (504, not the manager's 408), while a client that stops sending its
request is still cut. Silence cannot trigger a retry: the request has reached the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2
from routing_engine import ir
from routing_engine.envoy_rules.regex import glob_regex
from routing_engine import names
from routing_engine.translate.cluster import ADAPTER_KEY, LB_METADATA_NAMESPACE
from routing_engine.translate.xds import length_delimited, millis, pack, serialize

SAFE_RETRY_ON = "connect-failure,refused-stream,reset-before-request,retriable-status-codes"
RETRIABLE_STATUS_CODES = (503,)
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_PREVIOUS_HOSTS_CONFIG = pack(previous_hosts_pb2.PreviousHostsPredicate())
VIRTUAL_HOST = "*"
STALL_MARGIN_MS = 1000  # the connection manager's idle timeout, past the router's
PREFIX_HASH_HEADER = "x-modelroute-prefix-hash"  # set by the prefix_affinity filter, never by clients

# Field numbers used when assembling a RouteConfiguration from cached route bytes.
_ROUTE_CONFIG_VIRTUAL_HOSTS = 2
_VIRTUAL_HOST_ROUTES = 3


def string_matcher(match: ir.StringMatch) -> string_pb2.StringMatcher:
    if match.kind == "exact":
        return string_pb2.StringMatcher(exact=match.value)
    if match.kind == "prefix":
        return string_pb2.StringMatcher(prefix=match.value)
    if match.kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    raise ValueError(f"no StringMatcher for a {match.kind!r} match")


def _path(match: rc.RouteMatch, path: ir.PathMatch) -> None:
    if path.kind == "exact":
        match.path = path.value
    elif path.kind == "glob":
        match.safe_regex.regex = glob_regex(path.value)
    else:
        trimmed = path.value.rstrip("/")
        # path_separated_prefix cannot be "/" (or end in "/"): the root is every path.
        if trimmed:
            match.path_separated_prefix = trimmed
        else:
            match.prefix = "/"


def route_match(match: ir.RouteMatch) -> rc.RouteMatch:
    proto = rc.RouteMatch()
    _fill_match(proto, match)
    return proto


def _fill_match(proto: rc.RouteMatch, match: ir.RouteMatch) -> None:
    _path(proto, match.path)
    if not (match.headers or match.query_params or match.model is not None):
        return
    for name, value in match.headers:
        header = proto.headers.add(name=name)
        if value.kind == "present":
            header.present_match = True
        else:
            header.string_match.CopyFrom(string_matcher(value))
    for name, value in match.query_params:
        param = proto.query_parameters.add(name=name)
        if value.kind == "present":
            param.present_match = True
        else:
            param.string_match.CopyFrom(string_matcher(value))
    if match.model is not None:
        proto.dynamic_metadata.append(
            metadata_pb2.MetadataMatcher(
                filter=names.MODEL_METADATA_NAMESPACE,
                path=[metadata_pb2.MetadataMatcher.PathSegment(key=names.MODEL_METADATA_KEY)],
                value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=match.model)),
            )
        )


def normalized_weights(backends: Iterable[ir.WeightedBackend]) -> list[int]:
    """Weights divided by their gcd; all-zero (resolve rejects it) becomes equal shares."""
    weights = [max(0, b.weight) for b in backends]
    if not any(weights):
        return [1] * len(weights)
    divisor = math.gcd(*weights)
    return [w // divisor for w in weights]


def build_route(route: ir.Route) -> rc.Route:
    """The feature-free part of one route; plugins add their per-route config after."""
    proto = rc.Route(name=route.name)
    _fill_match(proto.match, route.match)
    action = proto.route
    sticky = False
    if len(route.backends) == 1:
        action.cluster = names.destination(route.backends[0])
    else:
        sticky = route.hash_header is not None and any(b.weight > 0 for b in route.backends)
        weights = [max(0, b.weight) for b in route.backends] if sticky else normalized_weights(route.backends)
        for backend, weight in zip(route.backends, weights, strict=True):
            action.weighted_clusters.clusters.add(name=names.destination(backend)).weight.value = weight
        if sticky and route.hash_header is not None:
            action.hash_policy.add().header.header_name = route.hash_header
            action.weighted_clusters.use_hash_policy.value = True
    if route.prefix_hash and not sticky:
        action.hash_policy.add().header.header_name = PREFIX_HASH_HEADER
    if route.adapter is not None:
        action.metadata_match.filter_metadata[LB_METADATA_NAMESPACE].fields[ADAPTER_KEY].string_value = route.adapter
    action.MergeFrom(_timing(route.timeout_ms, route.retries))
    return proto


@lru_cache(maxsize=256)
def _timing(timeout_ms: int, retries: int) -> rc.RouteAction:
    """A route's timeouts and retry policy: a handful of distinct values in a world of
    10,000 routes, so each is built once and merged in (one call instead of a dozen)."""
    action = rc.RouteAction()
    action.timeout.CopyFrom(millis(0))  # no cap on a whole (streamed) answer; silence is capped below
    action.idle_timeout.CopyFrom(millis(timeout_ms + STALL_MARGIN_MS))
    policy = action.retry_policy
    policy.per_try_idle_timeout.CopyFrom(millis(timeout_ms))
    if retries == 0:
        policy.num_retries.value = 0
    else:
        policy.retry_on = SAFE_RETRY_ON
        policy.num_retries.value = retries
        policy.retriable_status_codes.extend(RETRIABLE_STATUS_CODES)
        # Retry on another replica: the one that refused is likely still refusing.
        predicate = policy.retry_host_predicate.add(name=PREVIOUS_HOSTS)
        predicate.typed_config.CopyFrom(_PREVIOUS_HOSTS_CONFIG)
        policy.host_selection_retry_max_attempts = 3
    return action


def route_config_bytes(name: str, route_bytes: Iterable[bytes]) -> bytes:
    """A serialized RouteConfiguration `{name, virtual_hosts: [{name: "*", domains: ["*"],
    routes}]}` assembled from already-serialized routes. Byte-identical to building the
    message and serializing it deterministically (fields are emitted in number order)."""
    head = serialize(route_pb2.RouteConfiguration(name=name))
    vhost_head = serialize(rc.VirtualHost(name=VIRTUAL_HOST, domains=["*"]))
    vhost = vhost_head + b"".join(length_delimited(_VIRTUAL_HOST_ROUTES, body) for body in route_bytes)
    return head + length_delimited(_ROUTE_CONFIG_VIRTUAL_HOSTS, vhost)


def route_config(name: str, routes: Iterable[rc.Route]) -> route_pb2.RouteConfiguration:
    """The same RouteConfiguration as a message (for tests and readable output)."""
    config = route_pb2.RouteConfiguration(name=name)
    config.virtual_hosts.add(name=VIRTUAL_HOST, domains=["*"]).routes.extend(routes)
    return config
