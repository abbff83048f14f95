"""`/health`, `/ready` and `/metrics` on every ModelServer port (SPEC 3.1).

- `GET /health`: Envoy is up — a route with a direct 200, before every user route.
- `GET /ready`: 200 only while the listener's `ready_backends` have healthy endpoints —
  the `health_check` filter (not pass-through) with `cluster_min_healthy_percentages`.
  `GET /ready?server=<namespace>/<name>` asks about one ModelServer of the port only, so
  one unhealthy server never makes a load balancer drop the others. Each server has its
  own `health_check` filter (matching its exact path and query), but behind one
  `composite` filter that instantiates a server's filter only when the request's
  `server` query parameter names it (one map lookup): as plain filters in the chain,
  every request paid for all of them, +1.3 ms CPU per request with 2,500 servers on a
  port (`bench.dataplane --servers`). The query is matched as sent (`/`, not `%2F`):
  Envoy compares `:path` bytes, and a regex alternative would exceed Envoy's RE2
  program-size limit for long names.
  That filter only counts hosts the control plane marks UNHEALTHY in EDS (SPEC 5), which
  is why `endpoint.py` always sends `health_status`. The minimum is 1%: Envoy truncates
  the percentage to an integer (a tiny value like 1e-6 becomes 0 and never fails — found
  by the live test), so 1% means one healthy replica suffices for up to 100 replicas and
  none (or an empty cluster) fails.
  A listener without ready backends answers 200 as long as Envoy is up.
- `GET /metrics`: Envoy's Prometheus stats, routed to the bootstrap's admin cluster
  (`modelroute_admin`) with the path rewritten to `/stats/prometheus` — only on ports
  where no route needs authentication. Envoy's stats name every server, route and
  upstream host of the gateway; a port whose servers require a JWT or an API key must not
  hand them to anonymous clients, so there `/metrics` is not intercepted (it goes to the
  server owning the path, with that server's auth) and Envoy's stats are read from its
  admin port (and the control plane's `/metrics` has the per-variant series).
The filter runs first (rank 100) so probes need no credentials and spend no tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.http.composite.v3 import composite_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from routing_engine import ir
from routing_engine import names
from routing_engine.translate.plugin import RANKS, HttpFilter, Plugin
from routing_engine.translate.xds import pack

HEALTH_PATH = "/health"
READY_PATH = "/ready"
METRICS_PATH = "/metrics"
PROMETHEUS_PATH = "/stats/prometheus"
HEALTH_CHECK_FILTER = "envoy.filters.http.health_check"
SERVER_READY_FILTER = "modelroute.ready"  # the composite filter; + "/<backend>": each server's health_check
SERVER_PARAM = "server"
# Percent of healthy hosts below which /ready fails; the smallest value Envoy honours.
MIN_HEALTHY_PERCENT = 1.0


def server_ready_path(backend: str) -> str:
    """`/ready?server=<namespace>/<name>` of a ModelServer's backend (`modelserver/<ns>/<name>`)."""
    return f"{READY_PATH}?{SERVER_PARAM}={_server(backend)}"


def _server(backend: str) -> str:
    return backend.removeprefix("modelserver/")


def _health_check(path: str, backends: Sequence[str]) -> health_check_pb2.HealthCheck:
    config = health_check_pb2.HealthCheck()
    config.pass_through_mode.value = False
    config.headers.add(name=":path").string_match.exact = path
    for backend in backends:
        config.cluster_min_healthy_percentages[names.cluster(backend)].value = MIN_HEALTHY_PERCENT
    return config


def _servers_ready_filter(backends: Sequence[str]) -> HttpFilter:
    """One composite filter choosing, by the `server` query parameter, the one server's
    `health_check` filter to run (none for a request without the parameter)."""
    config = extension_matcher_pb2.ExtensionWithMatcher()
    config.extension_config.name = SERVER_READY_FILTER
    config.extension_config.typed_config.CopyFrom(pack(composite_pb2.Composite()))
    tree = config.xds_matcher.matcher_tree
    tree.input.name = SERVER_PARAM
    tree.input.typed_config.CopyFrom(pack(http_inputs_pb2.HttpRequestQueryParamMatchInput(query_param=SERVER_PARAM)))
    for backend in backends:
        action = composite_pb2.ExecuteFilterAction()
        action.typed_config.name = f"{SERVER_READY_FILTER}/{backend}"
        action.typed_config.typed_config.CopyFrom(pack(_health_check(server_ready_path(backend), [backend])))
        on_match = tree.exact_match_map.map[_server(backend)]
        on_match.action.name = action.typed_config.name
        on_match.action.typed_config.CopyFrom(pack(action))
    return HttpFilter(name=SERVER_READY_FILTER, typed_config=pack(config))


class HealthPlugin(Plugin):
    name = "health"
    rank = RANKS["health"]

    def listener_facet(self, route: ir.Route) -> bool:
        return bool(route.auth)  # /metrics is left out of a listener with authenticated routes

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        backends = sorted(set(listener.ready_backends))
        ready = HttpFilter(name=HEALTH_CHECK_FILTER, typed_config=pack(_health_check(READY_PATH, backends)))
        return [ready, _servers_ready_filter(backends)] if backends else [ready]

    def extra_routes(self, listener: ir.Listener) -> Sequence[rc.Route]:
        health = rc.Route(name="modelroute/health")
        health.match.path = HEALTH_PATH
        health.direct_response.status = 200
        health.direct_response.body.inline_string = "ok\n"
        if any(route.auth for route in listener.routes):
            return [health]
        metrics = rc.Route(name="modelroute/metrics")
        metrics.match.path = METRICS_PATH
        metrics.route.cluster = names.ADMIN_CLUSTER
        metrics.route.prefix_rewrite = PROMETHEUS_PATH
        return [health, metrics]
