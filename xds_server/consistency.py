"""Reference check for a snapshot: what CDS, LDS and SRDS point at must be in it.

Envoy would otherwise wait for a ClusterLoadAssignment or RouteConfiguration that never
comes (cluster/listener warming stalls for 15 s, then serves nothing). References live
inside serialized protos, so this parses Clusters and Listeners; it is a separate
function because parsing costs time the caller may already have spent.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from xds_server.snapshot import Snapshot
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE

_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def eds_references(snapshot: Snapshot) -> dict[str, str]:
    """EDS service name → the cluster that needs it, for every EDS cluster."""
    refs: dict[str, str] = {}
    for name, resource in snapshot.of_type(CLUSTER).items():
        cluster = cluster_pb2.Cluster.FromString(resource.body)
        if cluster.WhichOneof("cluster_discovery_type") == "type" and cluster.type == cluster_pb2.Cluster.EDS:
            refs[cluster.eds_cluster_config.service_name or cluster.name or name] = name
    return refs


def rds_references(snapshot: Snapshot) -> dict[str, str]:
    """RouteConfiguration name → the listener that needs it, for HCMs configured with RDS."""
    refs: dict[str, str] = {}
    for name, resource in snapshot.of_type(LISTENER).items():
        listener = listener_pb2.Listener.FromString(resource.body)
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url != _HCM_TYPE:
                    continue
                hcm = hcm_pb2.HttpConnectionManager.FromString(network_filter.typed_config.value)
                if hcm.WhichOneof("route_specifier") == "rds":
                    refs[hcm.rds.route_config_name] = name
    return refs


def srds_references(snapshot: Snapshot) -> dict[str, str]:
    """Scope name → the RouteConfiguration it selects, for scopes that name one by RDS."""
    refs: dict[str, str] = {}
    for name, resource in snapshot.of_type(SCOPED_ROUTE).items():
        scope = scoped_route_pb2.ScopedRouteConfiguration.FromString(resource.body)
        if not scope.HasField("route_configuration"):
            refs[name] = scope.route_configuration_name
    return refs


def check_consistency(snapshot: Snapshot) -> list[str]:
    """Errors naming the referring resource and the missing one; empty when consistent."""
    errors: list[str] = []
    endpoints = snapshot.of_type(ENDPOINT)
    for service, cluster in sorted(eds_references(snapshot).items()):
        if service not in endpoints:
            errors.append(f"Cluster {cluster!r}: EDS ClusterLoadAssignment {service!r} is not in the snapshot")
    routes = snapshot.of_type(ROUTE)
    for route, listener in sorted(rds_references(snapshot).items()):
        if route not in routes:
            errors.append(f"Listener {listener!r}: RDS RouteConfiguration {route!r} is not in the snapshot")
    for scope, route in sorted(srds_references(snapshot).items()):
        if route not in routes:
            errors.append(f"ScopedRouteConfiguration {scope!r}: RDS RouteConfiguration {route!r} is not in the snapshot")
    return errors
