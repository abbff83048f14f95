"""Backends → clusters: one EDS cluster per ModelServer, plus one per (primary, fallback)
pair that a ModelRoute with a fallback fails over through.

Each backend's endpoints are a separate ClusterLoadAssignment (`endpoint.py`), so replicas
coming and going change EDS only: the cluster (CDS) stays byte-identical and Envoy never
re-warms it. Least request suits inference (request cost varies by orders of magnitude);
outlier detection ejects a replica that keeps failing with 5xx or gateway errors.

Load balancing (`spec.loadBalancing`, ext; docs/decisions.md "Inference-aware routing"):
leastRequest and loadAware are both Envoy's least request (loadAware differs only in the
endpoints' EDS weights, `endpoint.py`); prefixAffinity is MAGLEV consistent hashing on
the hash its routes compute from the prompt's prefix, with a load bound
(`hash_balance_factor`: no replica takes more than 1.5x the average requests in flight).
A backend whose ModelInfer declares LoRA adapters gets Envoy's subset load balancer
over the endpoints' `envoy.lb` metadata `lora_adapter` (a list: `list_as_any`): a route
naming an adapter (`metadata_match`) picks only among the endpoints that load it, with
no fallback (503 when none does); other requests use every endpoint.

Failover is Envoy's priority levels within one EDS cluster, as Envoy Gateway builds
fallback backends: the pair's cluster is configured as its primary's, and its endpoints
are the primary's hosts at priority 0 and the fallback's at priority 1. Envoy's priority
load sends everything to the primary while at least 1/1.4 of its hosts are healthy (EDS
`health_status`, outlier ejection), then a growing share to the fallback, and all of it
once the primary has none — no client-visible error (as the aggregate cluster did). Not
Envoy's aggregate cluster: each one is called back on every cluster added or updated,
and 10,000 of them cost a connecting Envoy ~14 s before it served (docs/decisions.md,
"Failover clusters").
"""

from __future__ import annotations

from functools import lru_cache

from google.protobuf import duration_pb2

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from routing_engine import ir
from routing_engine.names import stat_name
from routing_engine import names
from routing_engine.translate.xds import ads, length_delimited, millis, serialize

LB_METADATA_NAMESPACE = "envoy.lb"  # where Envoy's subset load balancer reads endpoint metadata
ADAPTER_KEY = "lora_adapter"  # endpoint metadata (a list) and route metadata_match key
HASH_BALANCE_FACTOR = 150  # percent of the average load a replica may take under prefixAffinity
CONSISTENT_HASH_POLICY = cluster_pb2.Cluster.MAGLEV
_CLUSTER_NAME_FIELD = 1
_ALT_STAT_NAME_FIELD = 28  # after every field of the template: deterministic order is kept
MAX_RETRIES_IN_FLIGHT = 1024  # Envoy's default for connections, pending and active requests


def outlier_detection() -> outlier_detection_pb2.OutlierDetection:
    """Eject a replica after 5 consecutive 5xx (or gateway errors) for 30 s, never more
    than half the replicas, so a bad model version cannot empty a backend by itself."""
    detection = outlier_detection_pb2.OutlierDetection(
        interval=duration_pb2.Duration(seconds=10),
        base_ejection_time=duration_pb2.Duration(seconds=30),
    )
    detection.consecutive_5xx.value = 5
    detection.consecutive_gateway_failure.value = 5
    detection.max_ejection_percent.value = 50
    return detection


def circuit_breakers() -> circuit_breaker_pb2.CircuitBreakers:
    """Envoy's default allows 3 retries in flight per cluster: with a few concurrent
    clients, one refusing replica then turned safe retries into client-visible 503s
    (`upstream_rq_retry_overflow`). Retries are bounded per request by `retries` and only
    retry failures that never reached a model, so allow as many as requests (1024)."""
    breakers = circuit_breaker_pb2.CircuitBreakers()
    breakers.thresholds.add().max_retries.value = MAX_RETRIES_IN_FLIGHT
    return breakers


def backend_cluster(backend: ir.Backend, name: str | None = None) -> cluster_pb2.Cluster:
    """EDS service name left empty: Envoy then asks EDS for the cluster's own name. A
    name with "." gets a dot-free `alt_stat_name` (`routing_engine.names.stat_name`).
    `name`: another cluster configured as this backend's (a failover pair's, below)."""
    cluster = _backend_template(*_shape(backend))
    cluster.name = names.cluster(backend.name) if name is None else name
    if "." in cluster.name:
        cluster.alt_stat_name = stat_name(cluster.name)
    return cluster


_Shape = tuple[int, str, bool]


def _shape(backend: ir.Backend) -> _Shape:
    """Everything of a backend its cluster depends on besides the name."""
    return backend.connect_timeout_ms, backend.load_balancing, bool(backend.adapters)


def _backend_template(connect_timeout_ms: int, load_balancing: str = "leastRequest",
                      adapters: bool = False) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=millis(connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        outlier_detection=outlier_detection(),
        circuit_breakers=circuit_breakers(),
    )
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    if load_balancing == "prefixAffinity":
        cluster.lb_policy = CONSISTENT_HASH_POLICY
        cluster.common_lb_config.consistent_hashing_lb_config.hash_balance_factor.value = HASH_BALANCE_FACTOR
    if adapters:
        subsets = cluster.lb_subset_config
        subsets.fallback_policy = cluster_pb2.Cluster.LbSubsetConfig.ANY_ENDPOINT  # requests naming no adapter
        subsets.list_as_any = True
        subsets.subset_selectors.add(
            keys=[ADAPTER_KEY], fallback_policy=cluster_pb2.Cluster.LbSubsetConfig.LbSubsetSelector.NO_FALLBACK)
    return cluster


@lru_cache(maxsize=64)
def _template_bytes(connect_timeout_ms: int, load_balancing: str = "leastRequest", adapters: bool = False) -> bytes:
    return serialize(_backend_template(connect_timeout_ms, load_balancing, adapters))


def backend_cluster_bytes(backend: ir.Backend, name: str | None = None) -> bytes:
    """`serialize(backend_cluster(backend, name))` without building a message per backend:
    the name is field 1, every other field is the same for all backends with one connect
    timeout, so the bytes are the name followed by a cached template (tests check the
    two are identical). Cold compiles of 10,000 servers spend ~40x less here."""
    name = names.cluster(backend.name) if name is None else name
    body = length_delimited(_CLUSTER_NAME_FIELD, name.encode()) + _template_bytes(*_shape(backend))
    if "." in name:
        body += length_delimited(_ALT_STAT_NAME_FIELD, stat_name(name).encode())
    return body


def failover_cluster(primary: ir.Backend, fallback: str) -> cluster_pb2.Cluster:
    """The cluster of a (primary, fallback) pair: configured as the primary's (load
    balancing, LoRA subsets, outlier detection), its endpoints the primary's hosts at
    priority 0 and the fallback's at priority 1 (`endpoint.failover_assignment`)."""
    return backend_cluster(primary, names.failover_cluster(primary.name, fallback))


def failover_cluster_bytes(primary: ir.Backend, fallback: str) -> bytes:
    """`serialize(failover_cluster(primary, fallback))` from cached bytes, as
    `backend_cluster_bytes` (10,000 of them in a world where every route has a fallback)."""
    return backend_cluster_bytes(primary, names.failover_cluster(primary.name, fallback))

