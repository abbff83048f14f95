"""Reference check for a snapshot: what CDS, LDS and SRDS point at must be in it.

Envoy would otherwise wait for a ClusterLoadAssignment or RouteConfiguration that never
comes (cluster/listener warming stalls for 15 s, then serves nothing). References live
inside serialized protos, so this parses Clusters and Listeners; it is a separate
function because parsing costs time the caller may already have spent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from xds_server.snapshot import Snapshot
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, XdsResource, type_url

_HCM_TYPE = type_url(hcm_pb2.HttpConnectionManager)


# The references found in each resource, by (type, name, version): a push re-checks a
# snapshot of 10,000 routing scopes without parsing the ones it parsed before.
_parsed: dict[tuple[str, str, str], tuple[str, ...]] = {}
_PARSED_KEPT = 100_000


def _memo(resource: XdsResource, parse: Callable[[XdsResource], tuple[str, ...]]) -> tuple[str, ...]:
    key = (resource.type_url, resource.name, resource.version)
    found = _parsed.get(key)
    if found is None:
        if len(_parsed) >= _PARSED_KEPT:
            _parsed.clear()
        found = _parsed[key] = parse(resource)
    return found


# The references of each type's whole mapping, by identity: an engine hands an unchanged
# type back as the very same mapping (Snapshot.of_types keeps it), so a push after a
# one-route edit re-reads the references of the changed types only.
_by_mapping: dict[str, tuple[Mapping[str, XdsResource], dict[str, str]]] = {}


def _references(snapshot: Snapshot, type_url: str, parse: Callable[[XdsResource], tuple[str, ...]]) -> dict[str, str]:
    """Referenced name → the referring resource, for every resource of `type_url`."""
    of_type = snapshot.of_type(type_url)
    known = _by_mapping.get(type_url)
    if known is not None and known[0] is of_type:
        return known[1]
    refs: dict[str, str] = {}
    for name, resource in of_type.items():
        for ref in _memo(resource, parse):
            refs[ref or name] = name
    _by_mapping[type_url] = (of_type, refs)
    return refs


def eds_references(snapshot: Snapshot) -> dict[str, str]:
    """EDS service name → the cluster that needs it, for every EDS cluster."""
    return dict(_references(snapshot, CLUSTER, _eds_service))


def _eds_service(resource: XdsResource) -> tuple[str, ...]:
    cluster = cluster_pb2.Cluster.FromString(resource.body)
    if cluster.WhichOneof("cluster_discovery_type") == "type" and cluster.type == cluster_pb2.Cluster.EDS:
        return (cluster.eds_cluster_config.service_name or cluster.name,)
    return ()


def rds_references(snapshot: Snapshot) -> dict[str, str]:
    """RouteConfiguration name → the listener that needs it, for HCMs configured with RDS."""
    return dict(_references(snapshot, LISTENER, _rds_names))


def _rds_names(resource: XdsResource) -> tuple[str, ...]:
    listener = listener_pb2.Listener.FromString(resource.body)
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    found: list[str] = []
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url != _HCM_TYPE:
                continue
            hcm = hcm_pb2.HttpConnectionManager.FromString(network_filter.typed_config.value)
            if hcm.WhichOneof("route_specifier") == "rds":
                found.append(hcm.rds.route_config_name)
    return tuple(found)


def srds_references(snapshot: Snapshot) -> dict[str, str]:
    """Scope name → the RouteConfiguration it selects, for scopes that name one by RDS."""
    return {name: table for name, resource in snapshot.of_type(SCOPED_ROUTE).items()
            for table in _memo(resource, _scope_table)}


def _scope_table(resource: XdsResource) -> tuple[str, ...]:
    scope = scoped_route_pb2.ScopedRouteConfiguration.FromString(resource.body)
    return () if scope.HasField("route_configuration") else (scope.route_configuration_name,)


def check_consistency(snapshot: Snapshot) -> list[str]:
    """Errors naming the referring resource and the missing one; empty when consistent."""
    errors: list[str] = []
    endpoints = snapshot.of_type(ENDPOINT)
    for service, cluster in sorted(_missing(_references(snapshot, CLUSTER, _eds_service), endpoints)):
        errors.append(f"Cluster {cluster!r}: EDS ClusterLoadAssignment {service!r} is not in the snapshot")
    routes = snapshot.of_type(ROUTE)
    for route, listener in sorted(_missing(_references(snapshot, LISTENER, _rds_names), routes)):
        errors.append(f"Listener {listener!r}: RDS RouteConfiguration {route!r} is not in the snapshot")
    # Scopes sharing a table: every scope naming a missing table is reported.
    missing_tables = {t for t, _ in _missing(_references(snapshot, SCOPED_ROUTE, _scope_table), routes)}
    if missing_tables:
        for scope, route in sorted(srds_references(snapshot).items()):
            if route in missing_tables:
                errors.append(
                    f"ScopedRouteConfiguration {scope!r}: RDS RouteConfiguration {route!r} is not in the snapshot")
    return errors


def _missing(refs: Mapping[str, str], present: Mapping[str, XdsResource]) -> list[tuple[str, str]]:
    """(referenced name, referrer) for names absent from `present`; a set difference in C."""
    absent = refs.keys() - present.keys()
    return [(name, refs[name]) for name in absent]
