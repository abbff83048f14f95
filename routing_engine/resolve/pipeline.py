"""`resolve(world, target)`: the first half of the engine, manifests → IR + statuses, in
plain passes (the definition; `routing_engine.incremental.Resolver` computes the same with
memory across compiles, and tests compare the two after random edit sequences).

Phases, each a pure function of the previous ones' results:
1. `objects`: index the world by key (input order never matters after this);
2. `servers`: each ModelServer checked alone, then port/path/TLS claims world-wide;
3. `routes`: each ModelRoute's references, front door, owner, groups, fallback;
4. `listeners`: scope applied, listeners ordered, shadowing found;
5. `status`: one `ObjectStatus` per in-scope ModelServer and ModelRoute;
6. `served`: what each installed ModelRoute serves (`Compiled.routes`).
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
from routing_engine.api.extensions import ExtensionModels
from routing_engine.api.resources import ModelRoute, ModelServer, ObjectKey
from routing_engine.resolve.listeners import Assembler, in_scope, route_in_scope
from routing_engine.resolve.objects import ObjectIndex, age_key, choose
from routing_engine.resolve.routes import Served, resolve_route
from routing_engine.resolve.served import ServedRoutes
from routing_engine.resolve.servers import NO_EXTENSIONS, claims, outcome, own_checks
from routing_engine.resolve.status import route_status, server_status
from routing_engine.world import ObjectStatus, ServedRoute, Target, World


@dataclass(frozen=True, slots=True)
class Resolution:
    gateway: ir.Gateway
    statuses: Mapping[ObjectKey, ObjectStatus]  # sorted by key, read-only
    routes: Mapping[ObjectKey, ServedRoute]  # installed ModelRoutes, sorted by key, read-only


def resolve(world: World, target: Target, extensions: ExtensionModels = NO_EXTENSIONS) -> Resolution:
    """Never raises for objects pydantic accepted: every broken rule becomes a condition
    on the object that broke it, and everything else compiles. `extensions`: the models
    of the installed plugins' `spec.extensions` keys (none: every key is refused)."""
    chosen = choose(world.objects, lambda obj: obj.key)
    index = ObjectIndex.build(chosen, sorted(chosen), world.refused)
    own = {key: own_checks(server, index, world.endpoints, extensions) for key, server in index.servers.items()}
    contenders = sorted((server for key, server in index.servers.items() if own[key].ok), key=age_key)
    lost = claims(contenders, own, target)
    servers = {key: outcome(server, own[key], lost.get(key), target) for key, server in index.servers.items()}
    served = Served(servers)
    routes = {key: resolve_route(route, index, served, world.live_weights.get(key))
              for key, route in index.routes.items()}
    assembly = Assembler(target).assemble(servers, True, routes, None)
    # In key order without sorting: every ModelRoute key sorts before every ModelServer
    # key, and both indexes are in key order.
    assert ModelRoute.KIND < ModelServer.KIND
    by_backend = {s.backend.name: s for s in servers.values() if s.backend is not None}
    statuses: dict[ObjectKey, ObjectStatus] = {
        key: route_status(r, assembly.shadowed.get(key, {}), by_backend)
        for key, r in routes.items() if route_in_scope(r, target)}
    statuses.update((key, server_status(s, target)) for key, s in servers.items() if in_scope(key, target))
    return Resolution(assembly.gateway, MappingProxyType(statuses), ServedRoutes(target).build(routes, None, servers))
