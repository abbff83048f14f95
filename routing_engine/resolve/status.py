"""Outcomes → `ObjectStatus` for every ModelServer and ModelRoute of the target.

ModelServer: conditions Accepted (compiled into the config), ResolvedRefs (ModelInfer
and Secrets), Ready (≥ 1 healthy endpoint). Phase `Failed` when not compiled or when its
ModelInfer reference is forbidden, `Ready` when it has a healthy endpoint, else
`Pending` (e.g. its ModelInfer does not exist yet or has no ready replica).
`serviceEndpoint` is `http(s)://host:port/path` on the listener port, with host
`localhost` for a wildcard listen address (0.0.0.0 or ::), else the address itself.

ModelRoute: conditions Accepted, ResolvedRefs and, when compiled, Shadowed (True with
the groups that can never match, as a warning; they stay compiled). Phase `Failed` when
not compiled, `Active` when one of its backends has a healthy endpoint, else `Pending`.
`activeRoutes` counts its Envoy routes that can match: groups not shadowed plus the
fallback catch-all.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from routing_engine.resolve.conditions import (
    ACCEPTED,
    ENDPOINTS_READY,
    GROUP_SHADOWED,
    NO_HEALTHY_ENDPOINTS,
    NOT_SHADOWED,
    READY,
    RESOLVED_REFS,
    SHADOWED,
    condition,
)
from routing_engine.resolve.routes import RouteOutcome
from routing_engine.resolve.servers import ServerOutcome
from routing_engine.world import ConditionView, ObjectStatus, Target

_WILDCARDS = frozenset({"0.0.0.0", "::", "[::]"})
# The conditions of an object without problems are one value for every object: made once
# (20,000 objects, three conditions each, would otherwise make 60,000 equal ones).
_ACCEPTED = condition(ACCEPTED, (), ACCEPTED)
_RESOLVED = condition(RESOLVED_REFS, (), RESOLVED_REFS)
_NOT_SHADOWED = ConditionView(SHADOWED, "False", NOT_SHADOWED)


@lru_cache(maxsize=256)
def _endpoints_ready(healthy: int, known: int) -> ConditionView:
    return ConditionView(READY, "True", ENDPOINTS_READY, f"{healthy} of {known} endpoints healthy")


@lru_cache(maxsize=256)
def _route_ok(phase: str, active_routes: int) -> ObjectStatus:
    """The status of a compiled route without problems or shadowed groups."""
    return ObjectStatus(phase, (_ACCEPTED, _RESOLVED, _NOT_SHADOWED), active_routes=active_routes)


def server_status(outcome: ServerOutcome, target: Target) -> ObjectStatus:
    accepted = condition(ACCEPTED, outcome.problems, ACCEPTED) if outcome.problems else _ACCEPTED
    resolved = condition(RESOLVED_REFS, outcome.ref_problems, RESOLVED_REFS) if outcome.ref_problems else _RESOLVED
    if outcome.backend is None:
        ready = ConditionView(READY, "False", accepted.reason, "not served: " + accepted.message)
        return ObjectStatus("Failed", (accepted, resolved, ready))
    endpoints = outcome.backend.endpoints
    healthy = sum(1 for e in endpoints if e.healthy)
    if healthy:
        ready = _endpoints_ready(healthy, len(endpoints))
    else:
        message = f"{outcome.key}: no healthy endpoint ({len(endpoints)} known)"
        ready = ConditionView(READY, "False", NO_HEALTHY_ENDPOINTS, message)
    phase = "Failed" if outcome.infer_forbidden else "Ready" if healthy else "Pending"
    return ObjectStatus(phase, (accepted, resolved, ready), service_endpoint=_endpoint(outcome, target))


def _endpoint(outcome: ServerOutcome, target: Target) -> str:
    host = "localhost" if target.address in _WILDCARDS else target.address
    if ":" in host:
        host = f"[{host.strip('[]')}]"
    scheme = "https" if outcome.tls is not None else "http"
    return f"{scheme}://{host}:{outcome.port}{outcome.path}"


def route_status(
    outcome: RouteOutcome, shadowed: Mapping[int, str], servers: Mapping[str, ServerOutcome]
) -> ObjectStatus:
    """`servers` maps backend names to their servers, to tell Active from Pending."""
    if not outcome.compiled:
        accepted = condition(ACCEPTED, outcome.problems, ACCEPTED)
        resolved = condition(RESOLVED_REFS, outcome.ref_problems, RESOLVED_REFS) if outcome.ref_problems else _RESOLVED
        return ObjectStatus("Failed", (accepted, resolved), active_routes=0)
    backends = {b.backend for r in outcome.routes for b in r.backends}
    phase = "Active" if any(servers[b].healthy for b in backends if b in servers) else "Pending"
    if not shadowed:
        return _route_ok(phase, len(outcome.routes))
    parts = []
    for n, by in sorted(shadowed.items()):
        entries = ", ".join(f"spec.routes[{i}]" for i in outcome.groups[n].entries)
        parts.append(f"{entries} can never match: route {by} matches all of its requests first")
    shadow = ConditionView(SHADOWED, "True", GROUP_SHADOWED, f"{outcome.key}: " + "; ".join(parts))
    return ObjectStatus(phase, (_ACCEPTED, _RESOLVED, shadow), active_routes=len(outcome.routes) - len(shadowed))
