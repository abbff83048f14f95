"""`resolve(world, target)`: the first half of the engine, manifests → IR + statuses.

Phases, each a pure function of the previous ones' results:
1. `objects`: index the world by key (input order never matters after this);
2. `servers`: each ModelServer checked alone, then port/path/TLS claims world-wide;
3. `routes`: each ModelRoute's references, front door, owner, groups, fallback;
4. `listeners`: scope applied, listeners ordered, shadowing found;
5. `status`: one `ObjectStatus` per in-scope ModelServer and ModelRoute.
`translate` turns the resulting `ir.Gateway` into Envoy protos.

Statuses are what this target sees. Objects out of a sidecar's scope get none here, and
shadowing depends on which routes share a listener in the target, so the status writer
publishes the statuses of the unscoped gateway compile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from routing_engine import ir
from routing_engine.api.resources import ObjectKey
from routing_engine.resolve.listeners import assemble, in_scope, route_in_scope
from routing_engine.resolve.objects import ObjectIndex
from routing_engine.resolve.routes import Served, resolve_route
from routing_engine.resolve.servers import resolve_servers
from routing_engine.resolve.status import route_status, server_status
from routing_engine.world import ObjectStatus, Target, World


@dataclass(frozen=True, slots=True)
class Resolution:
    gateway: ir.Gateway
    statuses: Mapping[ObjectKey, ObjectStatus]  # sorted by key, read-only


def resolve(world: World, target: Target) -> Resolution:
    """Never raises for objects pydantic accepted: every broken rule becomes a condition
    on the object that broke it, and everything else compiles."""
    index = ObjectIndex.of(world.objects)
    servers = resolve_servers(index, world.endpoints, target)
    served = Served(servers)
    routes = {key: resolve_route(r, index, served, world.live_weights.get(key)) for key, r in index.routes.items()}
    assembly = assemble(servers, routes, target)
    statuses: dict[ObjectKey, ObjectStatus] = {
        key: server_status(s, target) for key, s in servers.items() if in_scope(key, target)
    }
    by_backend = {s.backend.name: s for s in servers.values() if s.backend is not None}
    for key, r in routes.items():
        if route_in_scope(r, target):
            statuses[key] = route_status(r, assembly.shadowed.get(key, {}), by_backend)
    return Resolution(assembly.gateway, MappingProxyType(dict(sorted(statuses.items()))))
