"""Cross-resource checks on a translation, for tests: every name a resource refers to
exists.

The xDS server checks what would stall Envoy's warming before it serves a snapshot
(`xds_server.consistency`: EDS, RDS and SRDS names); this is the stricter check on the
engine's whole output that the golden and property tests run: RDS names of listeners and of routing scopes, clusters of routes (weighted, the
health check's clusters, JWKS fetch clusters), EDS assignments of EDS clusters, SDS secrets
of TLS listeners. Clusters the bootstrap defines (`modelroute_admin`) count as present.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.http.composite.v3 import composite_pb2
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from routing_engine import serialize
from routing_engine import names
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET
from routing_engine.world import EnvoyResource

BOOTSTRAP_CLUSTERS = frozenset({names.ADMIN_CLUSTER})


def _listener_refs(listener: object) -> Iterator[tuple[str, str]]:
    for chain in listener.filter_chains:  # type: ignore[attr-defined]
        if chain.HasField("transport_socket"):
            tls = tls_pb2.DownstreamTlsContext()
            if chain.transport_socket.typed_config.Unpack(tls):
                for sds in tls.common_tls_context.tls_certificate_sds_secret_configs:
                    yield SECRET, sds.name
        for network_filter in chain.filters:
            hcm = hcm_pb2.HttpConnectionManager()
            if not network_filter.typed_config.Unpack(hcm):
                continue
            if hcm.HasField("rds"):
                yield ROUTE, hcm.rds.route_config_name
            for http_filter in hcm.http_filters:
                jwt = jwt_pb2.JwtAuthentication()
                if http_filter.typed_config.Unpack(jwt):
                    for provider in jwt.providers.values():
                        if provider.HasField("remote_jwks"):
                            yield CLUSTER, provider.remote_jwks.http_uri.cluster


def _health_check_refs(route: object) -> Iterator[tuple[str, str]]:
    """The clusters of the health checks a route's matchers run (the `/ready` route's)."""
    for packed in route.typed_per_filter_config.values():  # type: ignore[attr-defined]
        per_route = extension_matcher_pb2.ExtensionWithMatcherPerRoute()
        if not packed.Unpack(per_route):
            continue
        for on_match in per_route.xds_matcher.matcher_tree.exact_match_map.map.values():
            action, health = composite_pb2.ExecuteFilterAction(), health_check_pb2.HealthCheck()
            if on_match.action.typed_config.Unpack(action) and action.typed_config.typed_config.Unpack(health):
                yield from ((CLUSTER, c) for c in health.cluster_min_healthy_percentages)


def _route_refs(config: object) -> Iterator[tuple[str, str]]:
    for vhost in config.virtual_hosts:  # type: ignore[attr-defined]
        for route in vhost.routes:
            yield from _health_check_refs(route)
            if not route.HasField("route"):
                continue
            if route.route.cluster:
                yield CLUSTER, route.route.cluster
            for weighted in route.route.weighted_clusters.clusters:
                yield CLUSTER, weighted.name


def _scope_refs(scope: object) -> Iterator[tuple[str, str]]:
    if scope.route_configuration_name:  # type: ignore[attr-defined]
        yield ROUTE, scope.route_configuration_name  # type: ignore[attr-defined]


def _cluster_refs(cluster: cluster_pb2.Cluster) -> Iterator[tuple[str, str]]:
    if cluster.type == cluster_pb2.Cluster.EDS:
        yield ENDPOINT, cluster.eds_cluster_config.service_name or cluster.name


def dangling_references(resources: Mapping[str, Mapping[str, EnvoyResource]]) -> list[str]:
    """`"<type> <name> → <type> <name>"` for every reference to a missing resource."""
    problems = []
    walkers = {LISTENER: _listener_refs, SCOPED_ROUTE: _scope_refs, ROUTE: _route_refs, CLUSTER: _cluster_refs}
    for type_url, walk in walkers.items():
        for name, resource in sorted(resources.get(type_url, {}).items()):
            for ref_type, ref_name in walk(serialize.parse(resource)):  # type: ignore[operator]
                present = ref_name in resources.get(ref_type, {}) or (ref_type == CLUSTER and ref_name in BOOTSTRAP_CLUSTERS)
                if not present:
                    problems.append(f"{serialize.SECTION_NAMES[type_url]} {name} → {serialize.SECTION_NAMES[ref_type]} {ref_name}")
    return problems
