"""Resolved servers and routes → the listeners and backends of one target (SPEC 3.1,
3.3, 3.6).

- One listener per listener port of the in-scope compiled servers, on
  `target.address`, named `listener/{port}`; sorted by port.
- Route order on a listener (first match wins): ModelRoute routes first — longer front
  door (in characters) first, then older (creationTimestamp), then namespace/name, each
  ModelRoute's groups in written order followed by its fallback catch-all; then the
  ModelServers' own routes, longest `routing.path` first, then namespace/name. A longer
  path first means a more specific prefix is tried before the prefix containing it.
  `/health`, `/ready` and `/metrics` are added by translate, not here.
- `tls`: the certificate of the port (servers sharing a port agree on it, see
  `servers`); `ready_backends`: the backends of the servers on the port;
  `rate_limits`: (backend, limit) of every rate-limited server some route of the
  listener can send to, failover targets included, sorted by backend name.
- Scope (SPEC 3.6): a sidecar limited by `target.namespaces` / `target.servers` gets
  only the servers in scope, and a ModelRoute only if every ModelServer it references
  and every owner of its front door is in scope (it is installed on the owner's
  listener, which must exist for it). Claims and conflicts were decided world-wide
  before scoping, so a sidecar never serves a server the gateway reports as Failed.
- Shadowing is computed per listener over the ModelRoute routes (plain server routes
  come after them and cannot shadow them). A group is Shadowed when it is shadowed on
  every listener its ModelRoute is installed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from routing_engine import ir, names
from routing_engine.api.resources import ObjectKey
from routing_engine.resolve.objects import age_key
from routing_engine.resolve.routes import RouteOutcome
from routing_engine.resolve.servers import ServerOutcome
from routing_engine.resolve.shadowing import first_shadowers
from routing_engine.world import Target


@dataclass(frozen=True, slots=True)
class Assembly:
    gateway: ir.Gateway
    # ModelRoute → group index → name of the route that shadows it
    shadowed: Mapping[ObjectKey, Mapping[int, str]]


def in_scope(server: ObjectKey, target: Target) -> bool:
    return (target.namespaces is None or server.namespace in target.namespaces) and (
        target.servers is None or server in target.servers
    )


def route_in_scope(outcome: RouteOutcome, target: Target) -> bool:
    return all(in_scope(key, target) for key in outcome.servers)


def assemble(
    servers: Mapping[ObjectKey, ServerOutcome], routes: Mapping[ObjectKey, RouteOutcome], target: Target
) -> Assembly:
    scoped = [s for s in servers.values() if s.compiled and in_scope(s.key, target)]
    model_routes = [r for r in routes.values() if r.compiled and route_in_scope(r, target)]
    model_routes.sort(key=lambda r: (-len(r.front_door or ""), age_key(r.route)))
    scoped.sort(key=lambda s: (-len(s.path), s.key.namespace, s.key.name))
    limits = {s.backend.name: s.rate_limit for s in scoped if s.backend is not None and s.rate_limit is not None}
    group_of = {route.name: (r.key, n) for r in model_routes for n, route in enumerate(r.routes[: len(r.groups)])}
    per_listener: dict[ObjectKey, list[dict[int, str]]] = {r.key: [] for r in model_routes}
    listeners: list[ir.Listener] = []
    servers_on: dict[int, list[ServerOutcome]] = {}
    for s in scoped:
        servers_on.setdefault(s.port, []).append(s)
    routes_on: dict[int, list[RouteOutcome]] = {}
    for r in model_routes:
        for port in r.ports:
            routes_on.setdefault(port, []).append(r)
    for port, on_port in sorted(servers_on.items()):
        installed = routes_on.get(port, [])
        ordered = [route for r in installed for route in r.routes]
        found = first_shadowers(ordered, (name for r in installed for name in _group_names(r)))
        for r in installed:
            per_listener[r.key].append({})
        for name, shadower in found.items():
            key, n = group_of[name]
            per_listener[key][-1][n] = shadower
        ordered += [s.route for s in on_port if s.route is not None]
        listeners.append(_listener(port, on_port, tuple(ordered), limits, target))
    backends = tuple(sorted((s.backend for s in scoped if s.backend is not None), key=lambda b: b.name))
    return Assembly(ir.Gateway(tuple(listeners), backends), _everywhere(per_listener))


def _group_names(outcome: RouteOutcome) -> list[str]:
    return [route.name for route in outcome.routes[: len(outcome.groups)]]


def _listener(
    port: int,
    on_port: list[ServerOutcome],
    routes: tuple[ir.Route, ...],
    limits: Mapping[str, ir.RateLimit],
    target: Target,
) -> ir.Listener:
    reachable = {b.backend for r in routes for b in r.backends} | {
        b.failover_to for r in routes for b in r.backends if b.failover_to is not None
    }
    return ir.Listener(
        name=names.listener(port),
        address=target.address,
        port=port,
        routes=routes,
        tls=next((s.tls for s in on_port if s.tls is not None), None),
        ready_backends=tuple(sorted(s.backend.name for s in on_port if s.backend is not None)),
        rate_limits=tuple(sorted((b, limits[b]) for b in reachable if b in limits)),
    )


def _everywhere(per_listener: Mapping[ObjectKey, list[dict[int, str]]]) -> dict[ObjectKey, dict[int, str]]:
    """Groups shadowed on every listener of their route, with the first listener's
    shadower as the one to name."""
    result: dict[ObjectKey, dict[int, str]] = {}
    for key, found in per_listener.items():
        if found:
            common = set(found[0]).intersection(*found[1:])
            if common:
                result[key] = {n: found[0][n] for n in sorted(common)}
    return result
