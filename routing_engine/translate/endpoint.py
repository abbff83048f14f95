"""Backend endpoints → one ClusterLoadAssignment per backend (EDS).

Health is sent explicitly: an unready replica is listed as UNHEALTHY rather than left
out, because the `health_check` filter behind `/ready` and a failover pair's priority
levels both judge a backend by the EDS `health_status` of its hosts (SPEC 5); a
backend with no endpoints at all has an empty assignment, which both read as down.
A failover pair's assignment (`failover_assignment`) lists the primary's hosts at
priority 0 and the fallback's at priority 1, each as its own assignment lists them.

Issue 18: an endpoint's loaded LoRA adapters are its `envoy.lb` metadata `lora_adapter`
(a list, for the cluster's subset load balancer); a loadAware endpoint's weight is its
`load_balancing_weight` (Envoy's least request divides it by the requests in flight).
"""

from __future__ import annotations

from functools import lru_cache

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from routing_engine import ir
from routing_engine import names
from routing_engine.translate.cluster import ADAPTER_KEY, LB_METADATA_NAMESPACE
from routing_engine.translate.xds import length_delimited, serialize

_CLUSTER_NAME_FIELD = 1  # ClusterLoadAssignment.cluster_name


def load_assignment(backend: ir.Backend) -> endpoint_pb2.ClusterLoadAssignment:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=names.cluster(backend.name))
    if backend.endpoints:
        _add_hosts(assignment, backend.endpoints, 0)
    return assignment


def failover_assignment(primary: ir.Backend, fallback: ir.Backend) -> endpoint_pb2.ClusterLoadAssignment:
    """Priority 0 is listed even when the primary has no endpoints, so the fallback's
    hosts are priority 1 whatever the primary has."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=names.failover_cluster(primary.name, fallback.name))
    _add_hosts(assignment, primary.endpoints, 0)
    if fallback.endpoints:
        _add_hosts(assignment, fallback.endpoints, 1)
    return assignment


def load_assignment_bytes(backend: ir.Backend) -> bytes:
    """`serialize(load_assignment(backend))`, its hosts serialized once for the backend
    and every failover pair it is the primary of (`failover_assignment_bytes`)."""
    body = length_delimited(_CLUSTER_NAME_FIELD, names.cluster(backend.name).encode())
    return body + _hosts_at(backend.endpoints, 0) if backend.endpoints else body


def failover_assignment_bytes(primary: ir.Backend, fallback: ir.Backend) -> bytes:
    """`serialize(failover_assignment(primary, fallback))` from each backend's hosts as
    serialized once (the name is field 1, each priority's hosts an `endpoints` entry,
    field 2): a fallback shared by 10,000 pairs is serialized once per change of its
    replicas, not 10,000 times. Tests check the two are identical."""
    name = names.failover_cluster(primary.name, fallback.name)
    body = length_delimited(_CLUSTER_NAME_FIELD, name.encode()) + _hosts_at(primary.endpoints, 0)
    return body + _hosts_at(fallback.endpoints, 1) if fallback.endpoints else body


@lru_cache(maxsize=65536)  # each server's hosts at priority 0 and 1 in a world of 10,000 pairs and more
def _hosts_at(endpoints: tuple[ir.Endpoint, ...], priority: int) -> bytes:
    assignment = endpoint_pb2.ClusterLoadAssignment()
    _add_hosts(assignment, endpoints, priority)
    return serialize(assignment)


def _add_hosts(assignment: endpoint_pb2.ClusterLoadAssignment, endpoints: tuple[ir.Endpoint, ...],
               priority: int) -> None:
    locality = assignment.endpoints.add(priority=priority)
    for endpoint in sorted(endpoints, key=lambda e: (e.address, e.port)):
        lb = endpoint_components_pb2.LbEndpoint(
            health_status=health_check_pb2.HEALTHY if endpoint.healthy else health_check_pb2.UNHEALTHY
        )
        address = lb.endpoint.address.socket_address
        address.address = endpoint.address
        address.port_value = endpoint.port
        if endpoint.adapters:
            values = lb.metadata.filter_metadata[LB_METADATA_NAMESPACE].fields[ADAPTER_KEY].list_value.values
            for adapter in endpoint.adapters:
                values.add().string_value = adapter
        if endpoint.weight is not None:
            lb.load_balancing_weight.value = max(1, endpoint.weight)
        locality.lb_endpoints.append(lb)
