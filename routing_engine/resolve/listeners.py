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
  listener can send to, failover targets included, sorted by backend name;
  `extensions`: the plugins' `spec.extensions` of the servers on the port.
- `Gateway.shared_limits`: every cluster of the listeners whose requests draw from a
  shared limit (`rateLimit.global`), with the server owning it: the rate-limit service's
  table (`routing_engine.rate_limits`), kept per listener while the listener is the same.
- Scope (SPEC 3.6): a sidecar limited by `target.namespaces` / `target.servers` gets
  only the servers in scope, and a ModelRoute only if every ModelServer it references
  and every owner of its front door is in scope (it is installed on the owner's
  listener, which must exist for it). Claims and conflicts were decided world-wide
  before scoping, so a sidecar never serves a server the gateway reports as Failed.
- Shadowing is computed per listener over the ModelRoute routes (plain server routes
  come after them and cannot shadow them). A group is Shadowed when it is shadowed on
  every listener its ModelRoute is installed on.
- Routes to backends with LoRA adapters or prefix affinity are expanded last
  (`inference`): adapter routes in front of each, the prefix hash on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from routing_engine import ir, names
from routing_engine.api.resources import ModelRoute, ObjectKey
from routing_engine.rate_limits import shared_limits
from routing_engine.resolve.inference import Expander, special_backends
from routing_engine.resolve.objects import AgeKey, age_key
from routing_engine.resolve.routes import RouteOutcome
from routing_engine.resolve.servers import ServerOutcome
from routing_engine.resolve.shadowing import first_shadowers
from routing_engine.world import Target

# What shadowing reads of a ModelRoute: (name, match) of each of its routes, and how
# many of them are groups (the rest is the fallback catch-all).
Shape = tuple[tuple[tuple[str, ir.RouteMatch], ...], int]
SortKey = tuple[int, AgeKey]


@dataclass(frozen=True, slots=True)
class Assembly:
    gateway: ir.Gateway
    # ModelRoute → group index → name of the route that shadows it
    shadowed: Mapping[ObjectKey, Mapping[int, str]]


@dataclass(frozen=True, slots=True)
class _ServerSide:
    """What the listeners take from the servers, recomputed only when a server changed."""

    servers_on: dict[int, list[ServerOutcome]]  # listener port → its servers, in route order
    limits: dict[str, ir.RateLimit]
    backends: tuple[ir.Backend, ...]
    by_name: dict[str, ir.Backend]
    special: frozenset[str]  # backends with adapters or prefix affinity (`inference`)
    owners: dict[str, ObjectKey]  # backend name → its server, when some server has a shared limit


def in_scope(server: ObjectKey, target: Target) -> bool:
    return (target.namespaces is None or server.namespace in target.namespaces) and (
        target.servers is None or server in target.servers
    )


def route_in_scope(outcome: RouteOutcome, target: Target) -> bool:
    if target.namespaces is None and target.servers is None:
        return True
    return all(in_scope(key, target) for key in outcome.servers)


class Assembler:
    """Resolved servers and routes → listeners, backends and shadowing, for one target.

    It remembers what it built last time, so a compile after a small change redoes only
    what that change can affect: the route order is kept unless a route was added,
    removed, or changed its front door or scope; shadowing of a listener is recomputed
    only when the (name, match) sequence of its ModelRoute routes changed (a weight edit
    leaves it alone); the server side only when a server outcome changed. The result is
    the same as assembling from scratch (tests compare the two)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._side: _ServerSide | None = None
        self._sort_keys: dict[ObjectKey, SortKey] = {}
        self._order: list[ObjectKey] = []
        self._ages: dict[ObjectKey, tuple[ModelRoute, AgeKey]] = {}
        self._shapes: dict[ObjectKey, tuple[RouteOutcome, Shape]] = {}
        self._shadows: dict[int, tuple[tuple[Shape, ...], dict[ObjectKey, dict[int, str]]]] = {}
        # port → (server side, installed ModelRoutes, listener): the same IR object comes
        # back while neither changed, which lets translate skip the whole listener.
        self._listeners: dict[int, tuple[_ServerSide, tuple[RouteOutcome, ...], ir.Listener]] = {}
        self._expander = Expander()
        # listener name → (listener, its shared limits): the same listener object, the same rows
        self._shared: dict[str, tuple[ir.Listener, tuple[ir.SharedLimit, ...]]] = {}
        # The last assembly, its shadowing per port, and where each installed ModelRoute
        # sits on its port (for `_patched`).
        self._last: Assembly | None = None
        self._last_found: dict[int, Mapping[ObjectKey, Mapping[int, str]]] = {}
        self._where: dict[int, tuple[Sequence[RouteOutcome], dict[ObjectKey, tuple[int, int]]]] = {}

    def assemble(
        self,
        servers: Mapping[ObjectKey, ServerOutcome],
        servers_changed: bool,
        routes: Mapping[ObjectKey, RouteOutcome],
        routes_changed: set[ObjectKey] | None,
    ) -> Assembly:
        """`servers_changed`: some server outcome differs from the last call's;
        `routes_changed`: the keys whose route outcome differs (None: unknown, all)."""
        if not servers_changed and routes_changed is not None and self._last is not None:
            patched = self._patched(routes, routes_changed)
            if patched is not None:
                return patched
        if servers_changed or self._side is None:
            self._side = self._server_side(servers)
        side = self._side
        model_routes = self._ordered(routes, routes_changed)
        shapes = self._shapes_of(model_routes)
        routes_on: dict[int, list[RouteOutcome]] = {}
        for r in model_routes:
            for port in r.ports:
                routes_on.setdefault(port, []).append(r)
        listeners: list[ir.Listener] = []
        found_on: dict[int, dict[ObjectKey, dict[int, str]]] = {}
        shadows: dict[int, tuple[tuple[Shape, ...], dict[ObjectKey, dict[int, str]]]] = {}
        built: dict[int, tuple[_ServerSide, tuple[RouteOutcome, ...], ir.Listener]] = {}
        for port, on_port in sorted(side.servers_on.items()):
            installed = tuple(routes_on.get(port, ()))
            signature = tuple(shapes[r.key] for r in installed)
            memo = self._shadows.get(port)
            if memo is None or memo[0] != signature:
                memo = (signature, _shadows_on(installed))
            shadows[port] = memo
            found_on[port] = memo[1]
            known = self._listeners.get(port)
            if known is None or known[0] is not side or known[1] != installed:
                ordered = [route for r in installed for route in r.routes]
                ordered += [s.route for s in on_port if s.route is not None]
                expanded = self._expander.routes(ordered, side.by_name, side.special)
                known = (side, installed, _listener(port, on_port, expanded, side.limits, self.target))
            built[port] = known
            listeners.append(known[2])
        self._expander.end_round()
        self._shadows, self._listeners = shadows, built
        shadowed = _everywhere(found_on, routes)
        self._last_found = dict(found_on)
        self._last = Assembly(ir.Gateway(tuple(listeners), side.backends, self._shared_limits(listeners, side)),
                              shadowed)
        where, self._where = self._where, {}
        for port, known in built.items():  # now, so that the first edit on a port finds it ready
            kept = where.get(port)
            self._where[port] = kept if kept is not None and kept[0] is known[1] else (known[1], _offsets(known[1]))
        return self._last

    def _patched(self, routes: Mapping[ObjectKey, RouteOutcome], changed: set[ObjectKey]) -> Assembly | None:
        """Last call's assembly with a few route outcomes replaced in place: for a change
        that moves nothing (no server changed; each changed route was and stays
        installed, with the same order, ports and number of routes). The listeners of the
        other ports are last call's objects; shadowing is recomputed only for a port where
        a changed route's matches changed. None when the change is not of that kind."""
        assert self._last is not None and self._side is not None
        if len(changed) > 64 or self._side.special:
            return None  # (adapter and prefix-affinity expansion changes a listener's route count)
        by_port: dict[int, list[RouteOutcome]] = {}
        for key in changed:
            now, then = routes.get(key), self._shapes.get(key)
            if now is None or then is None or not self._installed(now) or self._moves(key, now):
                return None
            before = then[0]
            if now.ports != before.ports or len(now.routes) != len(before.routes):
                return None
            for port in now.ports:
                by_port.setdefault(port, []).append(now)
        listeners = list(self._last.gateway.listeners)
        position = {lst.port: n for n, lst in enumerate(listeners)}
        found_on: dict[int, Mapping[ObjectKey, Mapping[int, str]]] = {}
        for port, outcomes in by_port.items():
            known = self._listeners.get(port)
            if known is None or port not in position or known[0] is not self._side:
                return None
            where = self._index(port, known[1])
            installed = list(known[1])
            ordered = list(known[2].routes)
            signature = list(self._shadows[port][0])
            reshadow = False
            for r in outcomes:
                slot, offset = where[r.key]
                installed[slot] = r
                ordered[offset:offset + len(r.routes)] = r.routes
                shape = self._shape(r)
                reshadow = reshadow or shape != signature[slot]
                signature[slot] = shape
            frozen = tuple(installed)
            if reshadow:
                self._shadows[port] = (tuple(signature), _shadows_on(frozen))
            else:
                self._shadows[port] = (tuple(signature), self._shadows[port][1])
            lst = _rerouted(known[2], tuple(ordered), self._side.limits)
            self._listeners[port] = (self._side, frozen, lst)
            self._where[port] = (frozen, where)  # the same places: nothing moved
            listeners[position[port]] = lst
        for key in changed:
            self._shapes[key] = (routes[key], self._shape(routes[key]))
        shadowed = self._last.shadowed
        if any(port in by_port for port in self._shadows) and any(
                self._shadows[p][1] is not self._last_found.get(p) for p in by_port):
            shadowed = _everywhere({p: memo[1] for p, memo in self._shadows.items()}, routes)
        self._last_found = {p: memo[1] for p, memo in self._shadows.items()}
        gateway = ir.Gateway(tuple(listeners), self._last.gateway.backends,
                             self._shared_limits(listeners, self._side))
        self._last = Assembly(gateway, shadowed)
        return self._last

    def _shared_limits(self, listeners: Sequence[ir.Listener], side: _ServerSide) -> tuple[ir.SharedLimit, ...]:
        """The gateway's shared-limit table: each listener's rows, recomputed only for a
        listener object not seen last time; a cluster reachable on several ports is
        one row (same server, same limit)."""
        if not side.owners:
            self._shared = {}
            return ()
        memo: dict[str, tuple[ir.Listener, tuple[ir.SharedLimit, ...]]] = {}
        rows: dict[str, ir.SharedLimit] = {}
        for lst in listeners:
            known = self._shared.get(lst.name)
            if known is None or known[0] is not lst:
                known = (lst, shared_limits(lst, side.owners))
            memo[lst.name] = known
            for row in known[1]:
                rows.setdefault(row.cluster, row)
        self._shared = memo
        return tuple(rows[cluster] for cluster in sorted(rows))

    def _index(self, port: int, installed: Sequence[RouteOutcome]) -> dict[ObjectKey, tuple[int, int]]:
        """ModelRoute → (its place among the port's installed routes, the offset of its
        first route in the listener), computed once per installed tuple."""
        known = self._where.get(port)
        if known is None or known[0] is not installed:
            known = self._where[port] = (installed, _offsets(installed))
        return known[1]

    def _shape(self, outcome: RouteOutcome) -> Shape:
        known = self._shapes.get(outcome.key)
        shape: Shape = (tuple((route.name, route.match) for route in outcome.routes), len(outcome.groups))
        return known[1] if known is not None and known[1] == shape else shape

    def _server_side(self, servers: Mapping[ObjectKey, ServerOutcome]) -> _ServerSide:
        scoped = [s for s in servers.values() if s.compiled and in_scope(s.key, self.target)]
        scoped.sort(key=lambda s: (-len(s.path), s.key.namespace, s.key.name))
        limits = {s.backend.name: s.rate_limit for s in scoped if s.backend is not None and s.rate_limit is not None}
        servers_on: dict[int, list[ServerOutcome]] = {}
        for s in scoped:
            servers_on.setdefault(s.port, []).append(s)
        backends = tuple(sorted((s.backend for s in scoped if s.backend is not None), key=lambda b: b.name))
        owners = {b.name: b.owner for b in backends} if any(l.shared for l in limits.values()) else {}
        return _ServerSide(servers_on, limits, backends, {b.name: b for b in backends}, special_backends(backends),
                           owners)

    def _ordered(self, routes: Mapping[ObjectKey, RouteOutcome], changed: set[ObjectKey] | None) -> list[RouteOutcome]:
        """Compiled in-scope ModelRoutes in match order: longer front door first, then
        older. Re-sorted only when a change can move one."""
        resort = changed is None or any(self._moves(key, routes.get(key)) for key in changed)
        if resort:
            self._sort_keys = {key: self._sort_key(r) for key, r in routes.items() if self._installed(r)}
            self._order = sorted(self._sort_keys, key=self._sort_keys.__getitem__)
            self._ages = {key: self._ages[key] for key in self._sort_keys}
        return [routes[key] for key in self._order]

    def _installed(self, outcome: RouteOutcome) -> bool:
        return outcome.compiled and route_in_scope(outcome, self.target)

    def _moves(self, key: ObjectKey, outcome: RouteOutcome | None) -> bool:
        now = outcome is not None and self._installed(outcome)
        before = self._sort_keys.get(key)
        if outcome is None or not now:
            return before is not None
        return before is None or self._sort_key(outcome) != before

    def _sort_key(self, outcome: RouteOutcome) -> SortKey:
        known = self._ages.get(outcome.key)
        if known is None or known[0] is not outcome.route:
            known = (outcome.route, age_key(outcome.route))
            self._ages[outcome.key] = known
        return (-len(outcome.front_door or ""), known[1])

    def _shapes_of(self, model_routes: Sequence[RouteOutcome]) -> dict[ObjectKey, Shape]:
        """Each route's shape; an unchanged shape keeps its identity, so comparing a
        listener's shapes with last time's is cheap."""
        shapes: dict[ObjectKey, Shape] = {}
        memo: dict[ObjectKey, tuple[RouteOutcome, Shape]] = {}
        for r in model_routes:
            known = self._shapes.get(r.key)
            if known is None or known[0] is not r:
                shape: Shape = (tuple((route.name, route.match) for route in r.routes), len(r.groups))
                known = (r, known[1] if known is not None and known[1] == shape else shape)
            memo[r.key] = known
            shapes[r.key] = known[1]
        self._shapes = memo
        return shapes


def _offsets(installed: Sequence[RouteOutcome]) -> dict[ObjectKey, tuple[int, int]]:
    offsets: dict[ObjectKey, tuple[int, int]] = {}
    offset = 0
    for slot, r in enumerate(installed):
        offsets[r.key] = (slot, offset)
        offset += len(r.routes)
    return offsets


def _shadows_on(installed: Sequence[RouteOutcome]) -> dict[ObjectKey, dict[int, str]]:
    """ModelRoute → group index → shadowing route, on one listener."""
    ordered = [route for r in installed for route in r.routes]
    group_of = {route.name: (r.key, n) for r in installed for n, route in enumerate(r.routes[: len(r.groups)])}
    found: dict[ObjectKey, dict[int, str]] = {}
    for name, shadower in first_shadowers(ordered, group_of).items():
        key, n = group_of[name]
        found.setdefault(key, {})[n] = shadower
    return found


def _listener(
    port: int,
    on_port: list[ServerOutcome],
    routes: tuple[ir.Route, ...],
    limits: Mapping[str, ir.RateLimit],
    target: Target,
) -> ir.Listener:
    return ir.Listener(
        name=names.listener(port),
        address=target.address,
        port=port,
        routes=routes,
        tls=next((s.tls for s in on_port if s.tls is not None), None),
        ready_backends=tuple(sorted(s.backend.name for s in on_port if s.backend is not None)),
        rate_limits=_rate_limits(routes, limits),
        extensions=tuple(sorted((e for s in on_port for e in s.extensions), key=lambda e: (e.plugin, e.server))),
    )


def _rerouted(listener: ir.Listener, routes: tuple[ir.Route, ...], limits: Mapping[str, ir.RateLimit]) -> ir.Listener:
    """`_listener` for the same port and servers with other routes: what comes from the
    servers (thousands of them on a port) is taken from `listener` as it is."""
    return replace(listener, routes=routes, rate_limits=_rate_limits(routes, limits))


def _rate_limits(routes: Sequence[ir.Route], limits: Mapping[str, ir.RateLimit]) -> tuple[tuple[str, ir.RateLimit], ...]:
    if not limits:
        return ()
    reachable = {b.backend for r in routes for b in r.backends} | {
        b.failover_to for r in routes for b in r.backends if b.failover_to is not None
    }
    return tuple(sorted((b, limits[b]) for b in reachable if b in limits))


def _everywhere(
    found_on: Mapping[int, Mapping[ObjectKey, Mapping[int, str]]], routes: Mapping[ObjectKey, RouteOutcome]
) -> dict[ObjectKey, dict[int, str]]:
    """Groups shadowed on every listener of their route, with the first (lowest port)
    listener's shadower as the one to name."""
    per_route: dict[ObjectKey, list[Mapping[int, str]]] = {}
    for port in sorted(found_on):
        for key, groups in found_on[port].items():
            per_route.setdefault(key, []).append(groups)
    result: dict[ObjectKey, dict[int, str]] = {}
    for key in sorted(per_route):
        found = per_route[key]
        if len(found) != sum(1 for port in routes[key].ports if port in found_on):
            continue  # not shadowed on some listener of the route
        common = set(found[0]).intersection(*found[1:])
        if common:
            result[key] = {n: found[0][n] for n in sorted(common)}
    return result
