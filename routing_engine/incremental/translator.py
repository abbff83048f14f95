"""IR gateway → serialized xDS resources, memoized across runs.

`Translator` computes what `routing_engine.translate.translate` (the definition, one
plain pass) computes, with memory: stateful, but still pure (no I/O, no clocks). Tests
compare the two after random edit sequences. It keeps what it built last time and recognises unchanged input by identity
first (the `Resolver` hands back the very same IR objects for what did not change), by
equality second:

- per listener: the IR listener, its routes' entries (serialized `Route`, already framed
  as a `VirtualHost.routes` field, with a serial number unique to the entry), its
  RouteConfiguration and Listener. The same IR listener object → everything reused
  without looking at a route. Otherwise routes are matched position by position (then
  by identity, then by name and equality), and only new ones are serialized; the
  RouteConfiguration is the concatenation of the framed bytes (`route_config_bytes`);
  the Listener is keyed by its own fields plus its routes' serials (equal serials mean
  equal routes, so no second hash of 10,000 routes). Routes are checked against the
  gateway's backends; when those change (a server added on another port), a listener
  is kept as it is if none of its routes was left out and every backend they need is
  still there;
- each backend's Cluster and ClusterLoadAssignment by name, reused while the backend is
  equal; the whole stage when the gateway's backends tuple is the same object;
- failover clusters and endpoints by (primary, spare) pair, redone when a listener's
  routes or one of the pair's backends changed;
- the plugins' routes and resources, kept while no edited route's `listener_facet`
  changed (translate/plugin.py);
- the output: the union of those parts, patched where a part changed (`assembly.py`);
  a mapping in which nothing changed is handed out again.

Recompiling a world where one ModelRoute changed therefore serializes only that route
and rebuilds one RouteConfiguration. After each run the caches keep only what that run
used, so memory follows the current world, not its history. `last_stats` counts hits
and misses per cache for the last run (tests assert on them; benchmarks print them).

Failures are handled as the one-shot `translate` says (never raises; a route, a
listener or a plugin's resources left out, with errors on their owners).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, count
from operator import attrgetter, is_not
from typing import Any, NamedTuple

from google.protobuf.message import Message


from routing_engine import ir
from routing_engine.api.resources import ObjectKey
from routing_engine import names
from routing_engine.translate import cluster, endpoint, listener, route, scoped_layout, scopes
from routing_engine.translate.wire import framed_route, route_config_bytes
from routing_engine.translate.builtin import builtin
from routing_engine.translate.plugin import Plugin, ordered
from routing_engine.translate.result import (TranslateError, TranslateResult, failover_cluster_resource,
                                             failover_endpoints_resource, failover_owners, failover_pairs, failure,
                                             make_resource, needed_backends, unknown_backends)
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, serialize
from routing_engine.incremental.assembly import Assembly, Batch
from routing_engine.world import EnvoyResource




@dataclass(slots=True)
class CacheStats:
    hits: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)


_Order = tuple[frozenset[Any], list[Any]]


def _sorted(items: dict[Any, Any], orders: dict[str, _Order], kind: str) -> dict[Any, Any]:
    known = orders.get(kind)
    if known is None or len(known[1]) != len(items) or items.keys() != known[0]:
        known = orders[kind] = (frozenset(items), sorted(items))
    return {key: items[key] for key in known[1]}


@dataclass(frozen=True, slots=True)
class _RouteEntry:
    """One route as last serialized: its `VirtualHost.routes` field, ready to concatenate."""

    route: ir.Route
    framed: bytes
    serial: int  # unique to this entry: equal serials mean the same route
    backends: tuple[str, ...]  # every backend it needs (failover targets included)
    failovers: tuple[tuple[str, str], ...]  # (primary, spare) failover clusters it sends to
    depth: int | None = None  # path segments every request it matches shares with it (None: exact)


@dataclass(frozen=True, slots=True)
class _ListenerEntry:
    """What one listener produced last run, to reuse when the same IR listener comes back."""

    listener: ir.Listener
    known: frozenset[str]  # the backend set this entry is valid for (compared by identity)
    needed: frozenset[str]  # (at least) every backend its routes need
    routes: tuple[_RouteEntry, ...]
    errors: tuple[TranslateError, ...]
    owner_set: frozenset[ObjectKey]
    owners: tuple[ObjectKey, ...]  # sorted
    tables: Batch  # its route table(s) and routing scopes, with their owners
    key: tuple[Any, ...]  # the Listener's cache key: its fields, its routes' serials, its scope depth
    resource: EnvoyResource
    part: Batch  # the Listener with its owners
    failovers: Mapping[tuple[str, str], frozenset[ObjectKey]]  # pair → route owners
    layout: scoped_layout.ScopedLayout | None = None  # a scoped listener's split (translate/scopes.py)
    extras: tuple[tuple[str, bytes], ...] = ()  # the plugins' routes: (path, framed body)
    # Whether everything the plugins' listener-level hooks read is last run's: the
    # listener was reused, or routes changed in place with equal facets and owners.
    stable: bool = False


class Translator:
    """`scoped=False` keeps one RouteConfiguration per listener whatever its size (what
    Envoy's own file-based config can load, for the benchmarks' side-by-side)."""

    def __init__(self, plugins: Sequence[Plugin] | None = None, *, scoped: bool = True) -> None:
        self.plugins: tuple[Plugin, ...] = builtin() if plugins is None else ordered(plugins)
        self.scoped = scoped
        # The plugins' route hooks, without the base class's no-op (10 calls per route otherwise).
        self._route_hooks = tuple(p.patch_route for p in self.plugins
                                  if getattr(p.patch_route, "__func__", None) is not Plugin.patch_route)
        self.last_stats = CacheStats()
        self._serials = itertools.count()
        self._listeners: dict[str, _ListenerEntry] = {}  # by listener name
        # listener key → (its Listener, the RouteConfiguration name it asks for)
        self._listener_protos: dict[Hashable, tuple[EnvoyResource, str]] = {}
        self._backends: dict[str, tuple[ir.Backend, EnvoyResource, EnvoyResource]] = {}  # by backend name
        self._failovers: dict[tuple[str, str], _Failover] = {}  # by (primary, spare)
        self._by_name: tuple[tuple[ir.Backend, ...], Mapping[str, ir.Backend]] = ((), {})
        # The backends whose resources changed this run (None: not known, redo every pair).
        self._backend_changes: frozenset[str] | None = None
        self._known: frozenset[str] = frozenset()
        self._orders: dict[str, _Order] = {}
        self._backend_batch: tuple[tuple[ir.Backend, ...], Batch] = ((), Batch())
        # listener entries' failover maps (by identity) → the failover clusters with owners
        self._failover_inputs: tuple[Mapping[tuple[str, str], frozenset[ObjectKey]], ...] = ()
        self._failover_out = Batch()
        # The plugins' extra resources as parts, with the errors of the plugins that failed,
        # and what they were made from: (listener names, backends, shared limits).
        self._extras: tuple[dict[str, Batch], tuple[TranslateError, ...]] = ({}, ())
        self._extras_from: tuple[Any, ...] = ()
        self._assembly = Assembly()
        self._scope_keys: dict[tuple[str, int], scopes.Key] = {}  # (path, depth) → a scoped route's key

    def translate(self, gateway: ir.Gateway) -> TranslateResult:
        stats = CacheStats()
        parts: dict[Hashable, Batch] = {}
        errors: list[TranslateError] = []
        if gateway.backends is not self._backend_batch[0]:
            names_now = frozenset(b.name for b in gateway.backends)
            if names_now != self._known:
                self._known = names_now  # else the same object: entries checked against it stay valid
        known = self._known

        listeners: dict[str, _ListenerEntry] = {}
        protos: dict[Hashable, tuple[EnvoyResource, str]] = {}
        stable = True
        for lst in gateway.listeners:
            try:
                entry = self._listener_entry(lst, known, protos, stats)
            except Exception as err:  # a plugin's listener hook failed: this port fails closed, alone
                errors.extend(TranslateError(owner, f"listener {lst.name}: {failure(err)}; listener left out")
                              for owner in sorted(set(map(_OWNER, lst.routes))))
                stable = False
                continue
            listeners[lst.name] = entry
            errors.extend(entry.errors)
            stable = stable and entry.stable
            parts[("tables", lst.name)] = entry.tables
            parts[("listener", lst.name)] = entry.part
        self._listeners = listeners
        self._listener_protos = protos
        if len(self._scope_keys) > 4 * sum(len(lst.routes) for lst in gateway.listeners) + 1024:
            self._scope_keys = {}

        if gateway.backends is not self._backend_batch[0]:
            self._backend_batch = (gateway.backends, self._backend_resources(gateway.backends, stats))
        else:
            self._backend_changes = frozenset()
            stats.hits["backend"] += len(gateway.backends)
        parts[("backends",)] = self._backend_batch[1]

        parts[("failovers",)] = self._add_failovers(gateway, listeners.values(), stats)
        made_from = (tuple(listeners), gateway.backends, gateway.shared_limits)
        before = self._extras_from
        if not (stable and before and made_from[0] == before[0] and made_from[1] is before[1]
                and made_from[2] == before[2]):
            self._extras = self._extra_resources(gateway)
        else:
            stats.hits["extras"] += 1
        self._extras_from = made_from
        for name, batch in self._extras[0].items():
            parts[("plugin", name)] = batch
        errors.extend(self._extras[1])
        self.last_stats = stats
        resources, owners = self._assembly.assemble(parts)
        return TranslateResult(resources=resources, owners=owners, errors=tuple(errors))

    def _extra_resources(self, gateway: ir.Gateway) -> tuple[dict[str, Batch], tuple[TranslateError, ...]]:
        """Each plugin's extra resources as a part; a plugin that fails adds none and an
        error on every object they may serve."""
        found: dict[str, Batch] = {}
        errors: list[TranslateError] = []
        for plugin in self.plugins:
            try:
                extras = list(plugin.extra_resources(gateway))
            except Exception as err:  # its resources are missing: say so on every object they may serve
                owners = sorted({r.owner for lst in gateway.listeners for r in lst.routes})
                errors.extend(TranslateError(o, f"plugin {plugin.name}: {failure(err)}; its resources left out")
                              for o in owners)
                continue
            batch = found[plugin.name] = Batch()
            for extra in extras:
                batch.add(make_resource(extra.type_url, extra.name, serialize(extra.message)), tuple(sorted(set(extra.owners))))
        return found, tuple(errors)

    def _backend_resources(self, backends: Sequence[ir.Backend], stats: CacheStats) -> Batch:
        """Each backend's Cluster and ClusterLoadAssignment, reused while it is equal; the
        batch says which names changed against last run's."""
        cached: dict[str, tuple[ir.Backend, EnvoyResource, EnvoyResource]] = {}
        batch = Batch()
        changed: list[str] = []  # cluster names
        changed_names: list[str] = []  # backend names
        for backend in backends:
            pair = self._backends.get(backend.name)
            if pair is None or not (pair[0] is backend or pair[0] == backend):
                stats.misses["backend"] += 1
                pair = (
                    backend,
                    make_resource(CLUSTER, names.cluster(backend.name), cluster.backend_cluster_bytes(backend)),
                    make_resource(ENDPOINT, names.cluster(backend.name), endpoint.load_assignment_bytes(backend)),
                )
                changed.append(pair[1].name)
                changed_names.append(backend.name)
            else:
                stats.hits["backend"] += 1
            cached[backend.name] = pair
            batch.add(pair[1], (backend.owner,))
            batch.add(pair[2], (backend.owner,))
        self._backend_changes = None
        if len(cached) == len(backends):  # no name twice: the batch is last run's but for these
            gone = self._backends.keys() - cached.keys()
            self._backend_changes = frozenset(chain(changed_names, gone))
            changed.extend(names.cluster(name) for name in gone)
            batch.base, batch.changed = self._backend_batch[1], {CLUSTER: changed, ENDPOINT: changed}
        self._backends = cached
        return batch

    def _listener_entry(
        self, lst: ir.Listener, known: frozenset[str], protos: dict[Hashable, tuple[EnvoyResource, str]],
        stats: CacheStats
    ) -> _ListenerEntry:
        """The listener's RouteConfiguration and Listener, from last run's entry when the
        IR listener is the same object (resolve keeps it when nothing on it changed),
        else route by route: a route object seen last time on this listener, or an equal
        route of the same name, reuses its bytes."""
        previous = self._listeners.get(lst.name)
        if previous is not None and previous.known is not known:
            # Other backends in the gateway (a server added elsewhere): last run's routes stand
            # as long as none was left out (one might be complete now) and all they need is there.
            if previous.errors or not known.issuperset(previous.needed):
                previous = dataclasses.replace(previous, known=_UNCHECKED)  # checked again, route by route
            else:
                previous = dataclasses.replace(previous, known=known)
        if previous is not None and previous.listener is lst and previous.known is known:
            stats.hits["route"] += len(previous.routes)
            stats.hits["listener"] += 1
            protos[previous.key] = self._listener_protos[previous.key]
            return previous if previous.stable else dataclasses.replace(previous, stable=True)
        matched = self._in_place(lst, previous, known, stats) if previous is not None else None
        changed: list[int] | None = None
        if matched is not None and previous is not None:
            entries, errors, same_users, changed = matched
            serials: Sequence[Hashable] | None = None  # (each entry's serial; made only when needed)
            needed = previous.needed.union(*(entries[p].backends for p in changed)) if changed else previous.needed
        else:
            (entries, serials, errors), same_users = self._match(lst, previous, known, stats), False
            needed = frozenset(chain.from_iterable(e.backends for e in entries))
        if same_users and previous is not None:  # the same owners and failover pairs, position by position
            owner_set, owners = previous.owner_set, previous.owners
        else:
            owner_set = frozenset(map(_OWNER, lst.routes))
            owners = previous.owners if previous is not None and previous.owner_set == owner_set else tuple(sorted(owner_set))
        fields = _listener_fields(lst)
        facets_kept = (changed is not None and previous is not None and previous.key[:-2] == fields
                       and all(entries[p].depth == previous.routes[p].depth
                               and self._facets(entries[p].route) == self._facets(previous.routes[p].route)
                               for p in changed))
        if facets_kept and previous is not None:
            # Routes edited in place, nothing the listener-level hooks read of them changed:
            # the same Listener and plugin routes as last run.
            key, extras = previous.key, previous.extras
            depth: int = key[-1]
        else:
            found = [extra for plugin in self.plugins for extra in plugin.extra_routes(lst)]
            extras = tuple((e.match.path or e.match.path_separated_prefix or e.match.prefix,
                            framed_route(serialize(e))) for e in found)
            depth = scopes.choose_depth([*(scopes.proto_depth(e.match) for e in found), *(e.depth for e in entries)],
                                        len(found) + len(entries)) if self.scoped else 0
            key = (*fields, tuple(e.serial for e in entries) if serials is None else tuple(serials), depth)
        built = self._listener_protos.get(key)
        if built is None:
            stats.misses["listener"] += 1
            proto, tag = listener.build_listener(lst, self.plugins, scope_depth=depth)
            built = (make_resource(LISTENER, lst.name, serialize(proto)), tag)
        else:
            stats.hits["listener"] += 1
        protos[key] = built
        resource, tag = built
        layout: scoped_layout.ScopedLayout | None = None
        if depth:
            layout, patched = self._layout(lst, tag, depth, extras, entries, owners, previous, changed, stats)
            tables = Batch.of(dict(layout.resources), layout.owners,
                              previous.tables if patched and previous is not None else None, layout.changed)
        else:
            tables = Batch()
            name = names.route_config(lst, tag)
            tables.add(make_resource(ROUTE, name, route_config_bytes(name, [*(b for _, b in extras),
                                                                            *(e.framed for e in entries)])), owners)
        if previous is not None and previous.resource is resource and previous.owners is owners:
            part = previous.part
        else:
            part = Batch()
            part.add(resource, owners)
        stable = facets_kept and same_users
        if same_users and previous is not None:
            return _ListenerEntry(lst, known, needed, tuple(entries), tuple(errors), owner_set, owners, tables, key,
                                  resource, part, previous.failovers, layout, extras, stable)
        failovers: dict[tuple[str, str], set[ObjectKey]] = {}
        for e in entries:
            for pair in e.failovers:
                failovers.setdefault(pair, set()).add(e.route.owner)
        before = previous.failovers if previous is not None else {}
        kept: dict[tuple[str, str], frozenset[ObjectKey]] = {}
        for pair, found_owners in failovers.items():
            same = before.get(pair)
            kept[pair] = same if same is not None and same == found_owners else frozenset(found_owners)  # identity means unchanged
        return _ListenerEntry(lst, known, needed, tuple(entries), tuple(errors), owner_set, owners, tables, key,
                              resource, part, kept, layout, extras, stable)

    def _layout(self, lst: ir.Listener, tag: str, depth: int, paths: Sequence[tuple[str, bytes]],
                entries: Sequence[_RouteEntry], owners: tuple[ObjectKey, ...], previous: _ListenerEntry | None,
                changed: Sequence[int] | None, stats: CacheStats) -> tuple[scoped_layout.ScopedLayout, bool]:
        """A scoped listener's tables and scopes: last run's patched where routes changed
        in place (True), else built whole (reusing every resource that came out the same).
        `paths`: the plugins' routes as (path, framed body)."""
        before = previous.layout if previous is not None else None
        if before is not None and changed is not None:
            patched = scoped_layout.patched(before, lst, tag, depth, paths, entries, changed, owners, make_resource,
                                            self._scope_keys)
            if patched is not None:
                stats.misses["table"] += len({before.where[p][0] for p in changed})
                return patched, True
        stats.misses["table"] += 1
        return scoped_layout.build(lst, tag, depth, paths, entries, owners, make_resource, before, self._scope_keys), False

    def _in_place(self, lst: ir.Listener, previous: _ListenerEntry, known: frozenset[str], stats: CacheStats
                  ) -> tuple[list[_RouteEntry], list[TranslateError], bool, list[int]] | None:
        """The common edit: the same routes in the same places but a few (found by
        identity, in C), none left out. None when that is not the case; else the entries,
        errors, whether every replaced route has its predecessor's owner and
        failover pairs (then the listener's owners and failovers are last run's), and the
        positions of the routes whose content changed."""
        before, routes = previous.routes, lst.routes
        if previous.known is not known or len(before) != len(previous.listener.routes) or len(routes) != len(before):
            return None
        changed = list(compress(count(), map(is_not, routes, previous.listener.routes)))
        if len(changed) > len(routes) // 8:
            return None
        entries = list(before)
        errors: list[TranslateError] = []
        misses = 0
        same_users = True
        for position in changed:
            r, old = routes[position], before[position]
            if old.route.name != r.name:
                return None  # moved: matched by name in `_match`
            if old.route != r:
                entry = self._new_route(r, known, errors)
                if entry is None:
                    return None
                entries[position] = entry
                misses += 1
                same_users = same_users and entry.failovers == old.failovers and r.owner == old.route.owner
        stats.hits["route"] += len(routes) - misses
        stats.misses["route"] += misses
        return entries, errors, same_users, changed

    def _match(self, lst: ir.Listener, previous: _ListenerEntry | None, known: frozenset[str], stats: CacheStats
               ) -> tuple[list[_RouteEntry], list[Hashable], list[TranslateError]]:
        """Each route's entry: last run's at its position, by identity or by name when
        equal, else newly serialized; routes that cannot be built are left out."""
        before: tuple[_RouteEntry, ...] = previous.routes if previous is not None else ()
        aligned = previous is not None and len(before) == len(previous.listener.routes) == len(lst.routes)
        by_id: dict[int, _RouteEntry] | None = None
        by_name: dict[str, _RouteEntry] = {}
        errors: list[TranslateError] = []
        entries: list[_RouteEntry] = []
        serials: list[Hashable] = []
        hits = 0
        for position, r in enumerate(lst.routes):
            entry = before[position] if aligned else None
            if entry is not None and entry.route is not r and (entry.route.name != r.name or entry.route != r):
                entry = None if entry.route.name == r.name else _MOVED
            if entry is None and not aligned or entry is _MOVED:
                if by_id is None:
                    by_id = {id(e.route): e for e in before}
                    by_name = {e.route.name: e for e in before}
                entry = by_id.get(id(r))
                if entry is None or entry.route is not r:
                    entry = by_name.get(r.name)
                    if entry is not None and entry.route != r:
                        entry = None
            if entry is None:
                entry = self._new_route(r, known, errors)
                if entry is None:
                    serials.append(r)  # left out: rare, so hashing it whole is fine
                    continue
                stats.misses["route"] += 1
            elif not known.issuperset(entry.backends):
                errors.append(unknown_backends(r, known))
                serials.append(r)
                continue
            else:
                hits += 1
            entries.append(entry)
            serials.append(entry.serial)
        stats.hits["route"] += hits
        return entries, serials, errors

    def _new_route(self, r: ir.Route, known: frozenset[str], errors: list[TranslateError]) -> _RouteEntry | None:
        needed = needed_backends(r)
        if not r.backends or not known.issuperset(needed):
            errors.append(unknown_backends(r, known))
            return None
        try:
            body = serialize(self.route_message(r))
        except ValueError as err:
            errors.append(TranslateError(r.owner, f"route {r.name}: {err}; route left out"))
            return None
        except Exception as err:  # a plugin's route hook failed: this route fails alone
            errors.append(TranslateError(r.owner, f"route {r.name}: {failure(err)}; route left out"))
            return None
        failovers = failover_pairs(r) or _NONE
        return _RouteEntry(r, framed_route(body), next(self._serials), needed, failovers,
                           scopes.literal_depth(r.match.path))

    def _facets(self, r: ir.Route) -> tuple[Hashable, ...]:
        """What each plugin's listener hooks read of a route (asked only of edited routes)."""
        return tuple(p.listener_facet(r) for p in self.plugins)

    def route_message(self, r: ir.Route) -> Message:
        proto: Message = route.build_route(r)
        for patch in self._route_hooks:
            patch(r, proto)
        return proto

    def _add_failovers(self, gateway: ir.Gateway, listeners: Iterable[_ListenerEntry], stats: CacheStats) -> Batch:
        """Each (primary, spare) pair some route sends to: its cluster and endpoints
        (`result.failover_cluster_resource`, `failover_endpoints_resource`), owned by both
        backends' servers and every route using it. Redone for the pairs of the listeners whose routes changed and of the
        backends that changed (the owner of a backend is fixed by its name)."""
        inputs = tuple(entry.failovers for entry in listeners)
        before = self._failover_inputs
        changed_backends = self._backend_changes
        if len(inputs) != len(before) or not self._failover_out.owners or changed_backends is None:
            batch = Batch()
            for entry in self._failover_entries(gateway, inputs, stats):
                batch.add(entry.cluster, entry.owners)
                batch.add(entry.endpoints, entry.owners)
            self._failover_out = batch
        else:
            touched: set[tuple[str, str]] = set()
            for now, then in zip(inputs, before):
                if now is not then:  # a pair's users kept by identity are unchanged (`_listener_entry`)
                    touched.update(pair for pair, users in now.items() if then.get(pair) is not users)
                    touched.update(then.keys() - now.keys())
            if changed_backends:
                touched.update(pair for pair in self._failovers
                               if pair[0] in changed_backends or pair[1] in changed_backends)
            if touched:
                self._failover_out = self._failovers_patched(gateway, inputs, touched, stats)
            stats.hits["failover"] += len(self._failovers) - len(touched & self._failovers.keys())
        self._failover_inputs = inputs
        return self._failover_out

    def _failovers_patched(self, gateway: ir.Gateway, inputs: Sequence[Mapping[tuple[str, str], frozenset[ObjectKey]]],
                           touched: set[tuple[str, str]], stats: CacheStats) -> Batch:
        """Last run's failover resources with the `touched` pairs redone; the batch names
        only the resources that changed (a fallback's replicas: its pairs' assignments,
        not their clusters). The output is sorted later: the order here does not matter."""
        found_resources = {t: dict(self._failover_out.resources.get(t, {})) for t in (CLUSTER, ENDPOINT)}
        owners = dict(self._failover_out.owners)
        changed: dict[str, list[str]] = {CLUSTER: [], ENDPOINT: []}
        batch = Batch.of(found_resources, owners, self._failover_out, changed)
        by_name = self._backends_by_name(gateway)
        for pair in touched:
            found = [failovers[pair] for failovers in inputs if pair in failovers]
            entry = self._failovers.get(pair)
            name = names.failover_cluster(*pair)
            if not found:
                if entry is not None:
                    del self._failovers[pair]
                    for t in (CLUSTER, ENDPOINT):
                        del found_resources[t][name], owners[(t, name)]
                        changed[t].append(name)
                continue
            users = found[0] if len(found) == 1 else frozenset().union(*found)
            entry = self._failovers[pair] = self._failover(entry, users, by_name[pair[0]], by_name[pair[1]], stats)
            for resource in (entry.cluster, entry.endpoints):
                t, rid = resource.type_url, (resource.type_url, name)
                if found_resources[t].get(name) is not resource or owners.get(rid) != entry.owners:
                    found_resources[t][name] = resource
                    owners[rid] = entry.owners
                    changed[t].append(name)
        return batch

    def _failover_entries(self, gateway: ir.Gateway, inputs: Sequence[Mapping[tuple[str, str], frozenset[ObjectKey]]],
                          stats: CacheStats) -> list[_Failover]:
        used: dict[tuple[str, str], frozenset[ObjectKey]] = {}
        for failovers in inputs:
            for pair, found in failovers.items():
                known = used.get(pair)
                used[pair] = found if known is None else known | found  # rare: a pair on several listeners
        by_name = self._backends_by_name(gateway)
        cache: dict[tuple[str, str], _Failover] = {}
        for pair in _sorted(used, self._orders, "failovers"):
            cache[pair] = self._failover(self._failovers.get(pair), used[pair], by_name[pair[0]], by_name[pair[1]],
                                         stats)
        self._failovers = cache
        return list(cache.values())

    @staticmethod
    def _failover(entry: _Failover | None, users: frozenset[ObjectKey], primary: ir.Backend, spare: ir.Backend,
                  stats: CacheStats) -> _Failover:
        """Last run's `entry` while its route owners and both backends are equal; else
        redone, keeping its Cluster while the primary is equal (it depends on no other)."""
        same_primary = entry is not None and (entry.primary is primary or entry.primary == primary)
        if entry is not None and same_primary and (entry.spare is spare or entry.spare == spare):
            stats.hits["failover"] += 1
            if entry.users is users or entry.users == users:
                return entry
            return entry._replace(users=users, owners=failover_owners(primary, spare, users))
        stats.misses["failover"] += 1
        kept = entry is not None and (entry.users is users or entry.users == users)
        return _Failover(users, entry.cluster if entry is not None and same_primary
                         else failover_cluster_resource(primary, spare),
                         failover_endpoints_resource(primary, spare),
                         entry.owners if entry is not None and kept else failover_owners(primary, spare, users),
                         primary, spare)

    def _backends_by_name(self, gateway: ir.Gateway) -> Mapping[str, ir.Backend]:
        if self._by_name[0] is not gateway.backends:
            self._by_name = (gateway.backends, {b.name: b for b in gateway.backends})
        return self._by_name[1]


class _Failover(NamedTuple):
    """A failover pair as last built: the owners of the routes using it, its Cluster and
    ClusterLoadAssignment, all their owners, and the two backends they were built from."""

    users: frozenset[ObjectKey]
    cluster: EnvoyResource
    endpoints: EnvoyResource
    owners: tuple[ObjectKey, ...]
    primary: ir.Backend
    spare: ir.Backend


_OWNER = attrgetter("owner")
# Every field of an IR listener but its routes (they count by serial and facet): derived
# from the IR, so a field added to `ir.Listener` can never leave a listener stale.
_LISTENER_FIELDS = attrgetter(*(f.name for f in dataclasses.fields(ir.Listener) if f.name != "routes"))


def _listener_fields(lst: ir.Listener) -> tuple[Any, ...]:
    return _LISTENER_FIELDS(lst)


# A backend set no run has: an entry marked with it is valid for none (identity is the point).
_UNCHECKED: frozenset[str] = frozenset()
_NONE: tuple[tuple[str, str], ...] = ()
# A route found out of place: look it up by identity, then by name.
_MOVED = _RouteEntry(ir.Route("", ObjectKey("", "", ""), ir.RouteMatch(ir.PathMatch("exact", "")), (), 0, 0), b"", -1,
                     (), ())
