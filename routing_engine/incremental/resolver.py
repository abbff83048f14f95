"""`Resolver`: resolve with memory across calls (one per target, kept next to the
`Translator`). It computes what the one-shot `routing_engine.resolve.resolve` computes
(the definition; tests compare the two after random edit sequences): an object whose
inputs did not change keeps its previous outcome object, so a one-route edit
re-resolves that route and what depends on it, and downstream memos (assembly,
translate) recognise unchanged outcomes by identity. What each memoized outcome
depends on:
- a ModelServer: itself, its ModelInfer, that ModelInfer's endpoints, the Secrets of
  its namespace, and whether that ModelInfer or those Secrets are refused
  (`World.refused`); claims: every contender's object and TLS/auth material;
- a ModelRoute: itself, its live weights, the outcomes of the servers it references
  (and of its owners), whether those it references are refused, and the paths whose
  owner it looked up (a server appearing, changing or going away at one of them
  re-resolves it).
An object handed back as a new but equal pydantic object (a provider re-parsed it)
counts as unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from routing_engine.api.extensions import ExtensionModels
from routing_engine.api.resources import ModelInfer, ModelRoute, ModelServer, ObjectKey, Resource, Secret
from routing_engine.resolve.conditions import Problem
from routing_engine.resolve.listeners import Assembler, in_scope, route_in_scope
from routing_engine.resolve.objects import AgeKey, ObjectIndex, age_key, choose
from routing_engine.resolve.pipeline import Resolution
from routing_engine.resolve.routes import UNDER, RouteOutcome, Served, resolve_route
from routing_engine.resolve.served import ServedRoutes
from routing_engine.resolve.servers import NO_EXTENSIONS, Own, ServerOutcome, claims, outcome, own_checks
from routing_engine.resolve.status import route_status, server_status
from routing_engine.world import BackendEndpoint, ObjectStatus, Target, World


@dataclass(slots=True)
class _ServerMemo:
    server: ModelServer
    infer_key: ObjectKey
    infer: ModelInfer | None
    endpoints: tuple[BackendEndpoint, ...]
    secrets: tuple[Secret, ...]
    own: Own
    age: AgeKey
    conflict: Problem | None = None
    outcome: ServerOutcome | None = None


@dataclass(slots=True)
class _RouteMemo:
    route: ModelRoute
    live: tuple[int, int] | None
    paths: tuple[str, ...]  # every path whose owner resolve_route looked up
    outcome: RouteOutcome


def _same(a: Any, b: Any) -> bool:
    """The same object, or an equal one (a provider may re-parse an unchanged manifest)."""
    return a is b or (a is not None and b is not None and a == b)


class Resolver:
    """`resolve` with memory across calls; see the module docstring for what each
    memoized outcome depends on. Not thread-safe: one per target, used by one compile at
    a time. A call with another target than the last starts from scratch. `extensions`:
    the models of the installed plugins' `spec.extensions` keys (`Plugin.extension`)."""

    def __init__(self, extensions: ExtensionModels = NO_EXTENSIONS) -> None:
        self._extensions = extensions
        self._reset(None)

    def _reset(self, target: Target | None) -> None:
        self._target = target
        self._keys: dict[int, tuple[Resource, ObjectKey]] = {}  # id(object) → (object, key)
        self._sorted: list[ObjectKey] = []
        # last call's objects, the key at each position, and its index (None: a key repeated)
        self._last: tuple[tuple[Resource, ...], list[ObjectKey], ObjectIndex] | None = None
        # the ModelRoutes whose object was replaced since last call (None: not known)
        self._edited_routes: set[ObjectKey] | None = None
        self._route_outcomes: dict[ObjectKey, RouteOutcome] = {}
        self._live: Mapping[ObjectKey, tuple[int, int]] | None = None
        self._servers: dict[ObjectKey, _ServerMemo] = {}
        self._server_inputs: tuple[Mapping[ObjectKey, Any], ...] | None = None
        self._lost: dict[ObjectKey, Problem] = {}
        self._outcomes: dict[ObjectKey, ServerOutcome] = {}
        self._served: Served | None = None
        self._routes: dict[ObjectKey, _RouteMemo] = {}
        self._assembler = Assembler(target) if target is not None else None
        self._served_routes = ServedRoutes(target) if target is not None else None
        self._refused: frozenset[ObjectKey] = frozenset()
        self._server_statuses: dict[ObjectKey, tuple[ServerOutcome, ObjectStatus]] = {}
        self._route_statuses: dict[ObjectKey, tuple[RouteOutcome, Mapping[int, str], ObjectStatus]] = {}
        self._backends_of: tuple[Mapping[ObjectKey, ServerOutcome] | None, Mapping[str, ServerOutcome]] = (None, {})
        # last call's statuses (not handed out: the result wraps a copy) and shadowing
        self._last_statuses: tuple[dict[ObjectKey, ObjectStatus] | None, Mapping[ObjectKey, Mapping[int, str]]] = (
            None, {})

    def resolve(self, world: World, target: Target) -> Resolution:
        if target != self._target or self._assembler is None or self._served_routes is None:
            self._reset(target)
        assert self._assembler is not None and self._served_routes is not None
        index = self._index(world.objects)
        if world.refused:
            index = replace(index, refused=world.refused)
        refused_changed = self._refused ^ world.refused  # rare: invalid objects came or went
        self._refused = world.refused
        before = self._outcomes
        servers, servers_changed = self._resolve_servers(index, world.endpoints, target, refused_changed)
        served = self._served if not servers_changed and self._served is not None else Served(servers)
        self._served = served
        moved_paths = {o.path for key in servers_changed for o in (before.get(key), servers.get(key))
                       if o is not None and o.compiled}
        refs_changed = {key for key in refused_changed if key.kind == ModelServer.KIND}
        routes, routes_changed = self._resolve_routes(index, served, servers_changed, moved_paths, world.live_weights,
                                                      refs_changed)
        assembly = self._assembler.assemble(servers, bool(servers_changed), routes, routes_changed)
        statuses = self._statuses(servers, servers_changed, routes, routes_changed, assembly.shadowed, target)
        served_routes = self._served_routes.build(routes, routes_changed, servers)
        return Resolution(assembly.gateway, statuses, served_routes)

    # --- phases ------------------------------------------------------------------------

    def _index(self, objects: tuple[Resource, ...]) -> ObjectIndex:
        self._edited_routes = None
        if self._last is not None:
            patched = self._patched(objects, *self._last)
            if patched is not None:
                return patched
        keys = self._keys
        seen: dict[int, tuple[Resource, ObjectKey]] = {}

        def key_of(obj: Resource) -> ObjectKey:
            known = keys.get(id(obj))
            if known is None or known[0] is not obj:
                known = (obj, obj.key)
            seen[id(obj)] = known
            return known[1]

        chosen = choose(objects, key_of)
        self._keys = seen  # holds the objects, so their ids stay theirs
        if len(chosen) != len(self._sorted) or chosen.keys() != set(self._sorted):
            self._sorted = sorted(chosen)
        index = ObjectIndex.build(chosen, self._sorted)
        unique = len(chosen) == len(objects)
        self._last = (objects, [seen[id(obj)][1] for obj in objects], index) if unique else None
        return index

    def _patched(self, objects: tuple[Resource, ...], before: tuple[Resource, ...], positions: list[ObjectKey],
                 index: ObjectIndex) -> ObjectIndex | None:
        """Last call's index with the objects replaced in place swapped in: for a world
        that is last call's list with a few objects replaced by objects of the same keys
        (what providers hand over for an edit), with no key twice. None otherwise."""
        if objects is before:
            self._edited_routes = set()
            return index
        if len(objects) != len(before):
            return None
        changed = _replaced(objects, before, len(objects) // 8)
        if changed is None:
            return None
        replaced: dict[str, dict[ObjectKey, Resource]] = {}
        for position in changed:
            obj = objects[position]
            key = obj.key
            if key != positions[position]:
                return None
            replaced.setdefault(key.kind, {})[key] = obj
        for position in changed:
            self._keys.pop(id(before[position]), None)
            self._keys[id(objects[position])] = (objects[position], positions[position])

        def patch(current: Mapping[ObjectKey, Any], kind: str) -> Mapping[ObjectKey, Any]:
            return {**current, **replaced[kind]} if kind in replaced else current

        patched = ObjectIndex(
            servers=patch(index.servers, ModelServer.KIND),
            routes=patch(index.routes, ModelRoute.KIND),
            infers=patch(index.infers, ModelInfer.KIND),
            secrets=patch(index.secrets, Secret.KIND),
        )
        self._last = (objects, positions, patched)
        self._edited_routes = set(replaced.get(ModelRoute.KIND, ()))
        return patched

    def _resolve_servers(
        self, index: ObjectIndex, endpoints: Mapping[ObjectKey, tuple[BackendEndpoint, ...]], target: Target,
        refused_changed: frozenset[ObjectKey],
    ) -> tuple[dict[ObjectKey, ServerOutcome], set[ObjectKey]]:
        """Every server's outcome, and the keys whose outcome is not last call's object."""
        inputs = (index.servers, index.infers, index.secrets, endpoints)
        last = self._server_inputs
        # what a server's own checks read of the refused keys: its ModelInfer, its namespace's Secrets
        refused_infers = {key for key in refused_changed if key.kind == ModelInfer.KIND}
        refused_namespaces = {key.namespace for key in refused_changed if key.kind == Secret.KIND}
        if (last is not None and all(a is b for a, b in zip(inputs[:3], last[:3]))
                and (endpoints is last[3] or endpoints == last[3]) and not refused_infers and not refused_namespaces):
            return self._outcomes, set()  # the same objects (the index keeps unchanged kinds' mappings)
        self._server_inputs = inputs
        by_namespace: dict[str, list[Secret]] = {}
        for key, secret in index.secrets.items():
            by_namespace.setdefault(key.namespace, []).append(secret)
        secrets = {namespace: tuple(found) for namespace, found in by_namespace.items()}
        previous = self._servers
        memos: dict[ObjectKey, _ServerMemo] = {}
        claims_changed = previous.keys() != index.servers.keys()
        for key, server in index.servers.items():
            memo = previous.get(key)
            if memo is not None and not _same(memo.server, server):
                memo = None
            infer_key = memo.infer_key if memo is not None else server.spec.model_infer_ref.resolve(
                ModelInfer.KIND, server.metadata.namespace)
            infer = index.infers.get(infer_key)
            found = endpoints.get(infer_key, ())
            namespace_secrets = secrets.get(key.namespace, ())
            if (memo is not None and _same(memo.infer, infer) and memo.endpoints == found
                    and memo.secrets == namespace_secrets and infer_key not in refused_infers
                    and key.namespace not in refused_namespaces):
                memo.server = server
                memos[key] = memo
                continue
            own = own_checks(server, index, endpoints, self._extensions)
            if (memo is None or memo.own.tls != own.tls or memo.own.auth.ok != own.auth.ok
                    or memo.own.extensions.ok != own.extensions.ok):
                claims_changed = True
            age = memo.age if memo is not None else age_key(server)
            memos[key] = _ServerMemo(server, infer_key, infer, found, namespace_secrets, own, age)
        if claims_changed:
            contenders = [m for m in memos.values() if m.own.ok]
            contenders.sort(key=lambda m: m.age)
            self._lost = claims([m.server for m in contenders], {k: m.own for k, m in memos.items()}, target)
        outcomes: dict[ObjectKey, ServerOutcome] = {}
        for key, memo in memos.items():
            conflict = self._lost.get(key)
            if memo.outcome is None or memo.conflict != conflict:
                memo.conflict, memo.outcome = conflict, outcome(memo.server, memo.own, conflict, target)
            outcomes[key] = memo.outcome
        before = self._outcomes
        changed = {key for key, o in outcomes.items() if before.get(key) is not o}
        changed.update(key for key in before if key not in outcomes)
        self._servers, self._outcomes = memos, outcomes
        return outcomes, changed

    def _resolve_routes(
        self,
        index: ObjectIndex,
        served: Served,
        servers_changed: set[ObjectKey],
        moved_paths: set[str],
        live_weights: Mapping[ObjectKey, tuple[int, int]],
        refs_changed: set[ObjectKey],
    ) -> tuple[dict[ObjectKey, RouteOutcome], set[ObjectKey] | None]:
        """Every route's outcome, and the keys whose outcome is not last call's object
        (None on the first call). A route is re-resolved when it, its live weights, a
        server it references or owns it, whether a server it references is refused
        (`refs_changed`), or a server at a path it looked up changed."""
        previous = self._routes
        edited = self._edited_routes
        if (edited is not None and previous and not servers_changed and not refs_changed
                and (live_weights is self._live or live_weights == self._live)):
            return self._reresolve(edited, index, served)
        self._live = live_weights
        memos: dict[ObjectKey, _RouteMemo] = {}
        outcomes: dict[ObjectKey, RouteOutcome] = {}
        changed: set[ObjectKey] | None = None if not previous else set(previous.keys() - index.routes.keys())
        for key, route in index.routes.items():
            live = live_weights.get(key)
            memo = previous.get(key)
            if (memo is None or memo.live != live or not _same(memo.route, route)
                    or (servers_changed and not servers_changed.isdisjoint(memo.outcome.servers))
                    or (refs_changed and not refs_changed.isdisjoint(memo.outcome.servers))
                    or (moved_paths and _touches(moved_paths, memo.paths))):
                memo = self._resolve_route(route, index, served, live)
                if changed is not None:
                    changed.add(key)
            else:
                memo.route = route
            memos[key] = memo
            outcomes[key] = memo.outcome
        self._routes, self._route_outcomes = memos, outcomes
        return outcomes, changed

    def _reresolve(self, edited: set[ObjectKey], index: ObjectIndex, served: Served
                   ) -> tuple[dict[ObjectKey, RouteOutcome], set[ObjectKey]]:
        """Only routes whose object was replaced can have changed (no server, live weight
        or route key did): last call's outcomes with those re-resolved."""
        outcomes = dict(self._route_outcomes)
        changed: set[ObjectKey] = set()
        for key in edited:
            route, memo = index.routes[key], self._routes[key]
            if _same(memo.route, route):
                memo.route = route
                continue
            self._routes[key] = memo = self._resolve_route(route, index, served, memo.live)
            outcomes[key] = memo.outcome
            changed.add(key)
        self._route_outcomes = outcomes
        return outcomes, changed

    @staticmethod
    def _resolve_route(route: ModelRoute, index: ObjectIndex, served: Served, live: tuple[int, int] | None
                       ) -> _RouteMemo:
        served.probed = set()
        try:
            result = resolve_route(route, index, served, live)
            return _RouteMemo(route, live, tuple(served.probed), result)
        finally:
            served.probed = None

    def _statuses(
        self,
        servers: Mapping[ObjectKey, ServerOutcome],
        servers_changed: set[ObjectKey],
        routes: Mapping[ObjectKey, RouteOutcome],
        routes_changed: set[ObjectKey] | None,
        shadowed: Mapping[ObjectKey, Mapping[int, str]],
        target: Target,
    ) -> Mapping[ObjectKey, ObjectStatus]:
        """In key order without sorting: every ModelRoute key sorts before every
        ModelServer key, and both indexes are in key order. A status is rebuilt only
        when its outcome (or, for a route, its shadowing) changed; a route's health
        comes from the servers it references, whose change re-resolves it. When only a
        few routes changed, last call's statuses are copied and those few replaced."""
        assert ModelRoute.KIND < ModelServer.KIND
        previous, last_shadowed = self._last_statuses
        if previous is not None and not servers_changed and routes_changed is not None:
            touched = set(routes_changed)
            if shadowed != last_shadowed:
                touched.update(key for key in shadowed.keys() | last_shadowed.keys()
                               if shadowed.get(key) != last_shadowed.get(key))
            statuses = dict(previous)
            by_backend = self._by_backend(servers)
            for key in touched:
                r = routes.get(key)
                if r is None or not route_in_scope(r, target):
                    statuses.pop(key, None)
                    self._route_statuses.pop(key, None)
                elif key not in statuses:
                    break  # a new key: it must take its place in key order
                else:
                    statuses[key] = self._route_status(key, r, shadowed.get(key, {}), by_backend)
            else:
                self._last_statuses = (statuses, shadowed)
                return MappingProxyType(statuses)
        return self._all_statuses(servers, routes, shadowed, target)

    def _by_backend(self, servers: Mapping[ObjectKey, ServerOutcome]) -> Mapping[str, ServerOutcome]:
        if self._backends_of[0] is not servers:
            self._backends_of = (servers, {s.backend.name: s for s in servers.values() if s.backend is not None})
        return self._backends_of[1]

    def _route_status(self, key: ObjectKey, r: RouteOutcome, groups: Mapping[int, str],
                      by_backend: Mapping[str, ServerOutcome]) -> ObjectStatus:
        known = self._route_statuses.get(key)
        if known is None or known[0] is not r or known[1] != groups:
            known = self._route_statuses[key] = (r, groups, route_status(r, groups, by_backend))
        return known[2]

    def _all_statuses(
        self,
        servers: Mapping[ObjectKey, ServerOutcome],
        routes: Mapping[ObjectKey, RouteOutcome],
        shadowed: Mapping[ObjectKey, Mapping[int, str]],
        target: Target,
    ) -> Mapping[ObjectKey, ObjectStatus]:
        by_backend = self._by_backend(servers) if routes else {}
        statuses: dict[ObjectKey, ObjectStatus] = {}
        kept = self._route_statuses
        self._route_statuses = {}
        for key, r in routes.items():
            if route_in_scope(r, target):
                known = kept.get(key)
                if known is not None:
                    self._route_statuses[key] = known
                statuses[key] = self._route_status(key, r, shadowed.get(key, {}), by_backend)
        server_memo: dict[ObjectKey, tuple[ServerOutcome, ObjectStatus]] = {}
        for key, s in servers.items():
            if not in_scope(key, target):
                continue
            seen = self._server_statuses.get(key)
            if seen is None or seen[0] is not s:
                seen = (s, server_status(s, target))
            server_memo[key] = seen
            statuses[key] = seen[1]
        self._server_statuses = server_memo
        self._last_statuses = (statuses, shadowed)
        return MappingProxyType(statuses)


# Objects compared at once when looking for the replaced ones (`_replaced`).
_BLOCK = 256


def _replaced(objects: tuple[Resource, ...], before: tuple[Resource, ...], limit: int) -> list[int] | None:
    """The positions where `objects` holds another object than `before` (an equal one is
    the same, as everywhere here), or None when there are more than `limit`. Compared a
    block at a time: comparing two tuples passes over identical objects without calling
    Python, so a one-object edit in a world of 30,000 costs about a hundred block
    comparisons and a look inside the one block that differs."""
    changed: list[int] = []
    for start in range(0, len(objects), _BLOCK):
        end = start + _BLOCK
        if objects[start:end] == before[start:end]:
            continue
        changed.extend(i for i in range(start, min(end, len(objects)))
                       if objects[i] is not before[i] and objects[i] != before[i])
        if len(changed) > limit:
            return None
    return changed


def _touches(moved_paths: set[str], probed: tuple[str, ...]) -> bool:
    """Did a server appear, change or leave at a path this route looked up, or below a
    path it claims (`Served.under`)?"""
    if not moved_paths.isdisjoint(probed):
        return True
    claims = [p[len(UNDER):].rstrip("/") + "/" for p in probed if p.startswith(UNDER)]
    return any(moved.startswith(claim) for moved in moved_paths for claim in claims)
