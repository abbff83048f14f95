"""`/health`, `/ready` and `/metrics` on every ModelServer port (SPEC 3.1).

- `GET /health`: Envoy is up — a route with a direct 200, before every user route.
- `GET /ready`: 200 only while the listener's `ready_backends` have healthy endpoints —
  a `health_check` filter (not pass-through) with `cluster_min_healthy_percentages`.
  `GET /ready?server=<namespace>/<name>` asks about one ModelServer of the port only, so
  one unhealthy server never makes a load balancer drop the others: that server's own
  `health_check`, matching its exact path and query. The query is matched as sent (`/`,
  not `%2F`): Envoy compares `:path` bytes.
  These checks live on the `/ready` route, not in the filter chain: the chain has one
  `composite` filter with no matcher of its own (on other routes it only looks up the
  route's config), and the `/ready` route's per-route matcher picks the port's check or
  a server's by the whole `:path` (one map lookup). So a server coming or going changes
  the `/ready` table (which has a table of its own: `scoped_layout`), not the Listener:
  a Listener change renames the port's tables (they are named after it) and drains its
  connections, which at 2,500 servers per port re-sent every table and scope of the
  port. And a request elsewhere pays for none of it (as plain filters the per-server
  checks cost every request +1.3 ms of Envoy CPU with 2,500 servers on a port,
  `bench.dataplane --servers`). A `/ready` query no check answers (an unknown server,
  another parameter) gets a 404.
  A check only counts hosts the control plane marks UNHEALTHY in EDS (SPEC 5), which is
  why `endpoint.py` always sends `health_status`. The minimum is 1%: Envoy truncates the
  percentage to an integer (a tiny value like 1e-6 becomes 0 and never fails — found by
  the live test), so 1% means one healthy replica suffices for up to 100 replicas and
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
from xds.type.matcher.v3 import matcher_pb2
from routing_engine import ir
from routing_engine import names
from routing_engine.api.types import HEALTH_PATH, METRICS_PATH, READY_PATH
from routing_engine.translate.plugin import RANKS, HttpFilter, Plugin
from routing_engine.translate.xds import pack

PROMETHEUS_PATH = "/stats/prometheus"
READY_FILTER = "modelroute.ready"  # the composite filter in the chain
PORT_CHECK = "envoy.filters.http.health_check"  # the port's check it runs; a server's: READY_FILTER/<backend>
# Percent of healthy hosts below which /ready fails; the smallest value Envoy honours.
MIN_HEALTHY_PERCENT = 1.0


def server_ready_path(backend: str) -> str:
    """`/ready?server=<namespace>/<name>` of a ModelServer's backend (`modelserver/<ns>/<name>`)."""
    return f"{READY_PATH}?server={backend.removeprefix('modelserver/')}"


def _health_check(path: str, backends: Sequence[str]) -> health_check_pb2.HealthCheck:
    config = health_check_pb2.HealthCheck()
    config.pass_through_mode.value = False
    config.headers.add(name=":path").string_match.exact = path
    for backend in backends:
        config.cluster_min_healthy_percentages[names.cluster(backend)].value = MIN_HEALTHY_PERCENT
    return config


def _put_check(on_match: matcher_pb2.Matcher.OnMatch, name: str, check: health_check_pb2.HealthCheck) -> None:
    """Make `on_match` the composite action that runs `check` as the filter `name` (filled
    in place: 2,500 servers on a port make 2,500 of them)."""
    on_match.action.name = name
    action = composite_pb2.ExecuteFilterAction()
    action.typed_config.name = name
    action.typed_config.typed_config.Pack(check, deterministic=True)
    on_match.action.typed_config.Pack(action, deterministic=True)


def ready_matcher(backends: Sequence[str]) -> matcher_pb2.Matcher:
    """By the whole `:path` as sent, one map lookup: `/ready` runs the port's check,
    `/ready?server=<namespace>/<name>` that server's."""
    matcher = matcher_pb2.Matcher()
    tree = matcher.matcher_tree
    tree.input.name = ":path"
    tree.input.typed_config.CopyFrom(pack(http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=":path")))
    checks = tree.exact_match_map.map
    _put_check(checks[READY_PATH], PORT_CHECK, _health_check(READY_PATH, backends))
    for backend in backends:
        path = server_ready_path(backend)
        _put_check(checks[path], f"{READY_FILTER}/{backend}", _health_check(path, [backend]))
    return matcher


def ready_route(backends: Sequence[str]) -> rc.Route:
    route = rc.Route(name="modelroute/ready")
    route.match.path = READY_PATH  # the query is the matcher's business
    route.direct_response.status = 404  # what no check answered
    route.direct_response.body.inline_string = "no such readiness check\n"
    per_route = extension_matcher_pb2.ExtensionWithMatcherPerRoute()
    per_route.xds_matcher.CopyFrom(ready_matcher(backends))
    route.typed_per_filter_config[READY_FILTER].CopyFrom(pack(per_route))
    return route


class HealthPlugin(Plugin):
    name = "health"
    rank = RANKS["health"]

    def listener_facet(self, route: ir.Route) -> bool:
        return bool(route.auth)  # /metrics is left out of a listener with authenticated routes

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        config = extension_matcher_pb2.ExtensionWithMatcher()  # no matcher: only routes give it one
        config.extension_config.name = READY_FILTER
        config.extension_config.typed_config.CopyFrom(pack(composite_pb2.Composite()))
        return [HttpFilter(name=READY_FILTER, typed_config=pack(config))]

    def extra_routes(self, listener: ir.Listener) -> Sequence[rc.Route]:
        health = rc.Route(name="modelroute/health")
        health.match.path = HEALTH_PATH
        health.direct_response.status = 200
        health.direct_response.body.inline_string = "ok\n"
        ready = ready_route(sorted(set(listener.ready_backends)))
        if any(route.auth for route in listener.routes):
            return [health, ready]
        metrics = rc.Route(name="modelroute/metrics")
        metrics.match.path = METRICS_PATH
        metrics.route.cluster = names.ADMIN_CLUSTER
        metrics.route.prefix_rewrite = PROMETHEUS_PATH
        return [health, ready, metrics]
