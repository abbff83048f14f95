"""Which destination clusters draw from which ModelServer's rate limit (SPEC 3.1).

Envoy's rate-limit descriptors name the cluster the router picked: a backend's own
cluster, or a failover pair's (`failover/<primary>/<fallback>`), which draws from its
primary's limit. One rule, followed by both consumers: translate's filters
(`translate/ratelimit.py`: one local bucket or one shared descriptor per such cluster)
and the shared rate-limit service's table (`ir.Gateway.shared_limits`, which resolve
fills with `shared_limits` and the controller hands to the service), so the service
always knows every cluster name Envoy will ask about.
"""

from __future__ import annotations

from collections.abc import Mapping

from routing_engine import ir, names
from routing_engine.api.resources import ObjectKey


def limited_destinations(listener: ir.Listener, *, shared: bool = False) -> dict[str, tuple[str, ir.RateLimit]]:
    """Cluster name → (backend that owns the limit, limit), for the local limits of this
    listener or, with `shared`, its shared ones: a failover pair's cluster maps to its primary."""
    own = {backend: limit for backend, limit in listener.rate_limits if limit.shared == shared}
    clusters = {names.cluster(backend): (backend, limit) for backend, limit in own.items()}
    if not own:
        return clusters
    for route in listener.routes:
        for wb in route.backends:
            if wb.backend in own:
                clusters.setdefault(names.destination(wb), (wb.backend, own[wb.backend]))
    return clusters


def shared_limits(listener: ir.Listener, owners: Mapping[str, ObjectKey]) -> tuple[ir.SharedLimit, ...]:
    """The listener's clusters that draw from a shared limit, each with the ModelServer
    (`owners`: backend name → its server) whose counters they share, sorted by cluster."""
    found = limited_destinations(listener, shared=True)
    return tuple(ir.SharedLimit(cluster, owners[backend], limit)
                 for cluster, (backend, limit) in sorted(found.items()) if backend in owners)
