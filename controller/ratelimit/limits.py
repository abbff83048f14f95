"""What the rate-limit service enforces, taken from a compile: destination cluster → the
shared limit of the ModelServer that owns it.

Envoy's descriptors name the cluster the router picked (`destination_cluster`); the
service needs the ModelServer behind it, its requests/s and token budgets. The engine
names them (`ir.Gateway.shared_limits`: failover pairs' clusters map to their primary, so both
share one counter); this reads them off `Compiled.gateway` of the unscoped compile (every
sidecar's clusters are among its).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from routing_engine import ir

UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True, slots=True)
class ClusterLimit:
    server: str  # namespace/name of the ModelServer: the counters' identity
    requests_per_second: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    token_unit: str = "minute"

    @property
    def token_window_ms(self) -> int:
        return UNIT_SECONDS[self.token_unit] * 1000


def cluster_limits(gateways: Iterable[ir.Gateway]) -> dict[str, ClusterLimit]:
    limits: dict[str, ClusterLimit] = {}
    for gateway in gateways:
        for row in gateway.shared_limits:
            limit = row.limit
            limits[row.cluster] = ClusterLimit(f"{row.server.namespace}/{row.server.name}", limit.requests_per_second,
                                               limit.input_tokens, limit.output_tokens, limit.token_unit)
    return limits


def describe(limits: Mapping[str, ClusterLimit]) -> str:
    return ", ".join(f"{c}={l.requests_per_second}/s" for c, l in sorted(limits.items()))
