"""IR gateway → serialized xDS resources, memoized per IR object.

`Translator` is the stateful (but still pure: no I/O, no clocks) front of the translate
package. IR objects are frozen and hashable, so the translator keeps what it built last
time keyed by the IR object it came from:

- each route's serialized `Route` (plugins' per-route config included), by `ir.Route`;
- each backend's Cluster and ClusterLoadAssignment, by `ir.Backend`;
- each listener's Listener, by its own fields plus the serial numbers of its routes'
  cache entries (equal serials mean equal routes, so this key identifies the listener
  without hashing 10,000 routes a second time); each failover cluster by its pair.

Recompiling a world where one ModelRoute changed therefore serializes only that route,
then concatenates the cached bytes of the others into the listener's RouteConfiguration
(`route.route_config_bytes`); unchanged clusters and endpoints are reused as they are.
After each run the caches keep only the entries that run used, so memory follows the
current world, not its history. `last_stats` counts hits and misses per cache for the
last run (tests assert on them; benchmarks print them).

Translation is best effort: a route that cannot be built (a backend missing from the
gateway, an invalid policy) is left out and reported in `errors` with its owner; every
other route still compiles, so one bad object never takes down unrelated routes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf.message import Message

from routing_engine import ir
from routing_engine.api.resources import ObjectKey
from routing_engine.translate import cluster, endpoint, listener, names, route
from routing_engine.translate.plugin import Plugin, builtin, ordered
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_ORDER, serialize
from routing_engine.world import EnvoyResource


@dataclass(frozen=True, slots=True)
class TranslateError:
    owner: ObjectKey
    message: str


@dataclass(frozen=True, slots=True)
class TranslateResult:
    # type_url → name → resource, both levels sorted by key
    resources: Mapping[str, Mapping[str, EnvoyResource]]
    owners: Mapping[tuple[str, str], tuple[ObjectKey, ...]]
    errors: tuple[TranslateError, ...] = ()


@dataclass(slots=True)
class CacheStats:
    hits: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)


def make_resource(type_url: str, name: str, body: bytes) -> EnvoyResource:
    return EnvoyResource(type_url=type_url, name=name, body=body, version=hashlib.sha256(body).hexdigest()[:16])


class _Output:
    """Resources and owners being collected for one run."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, EnvoyResource]] = {t: {} for t in TYPE_ORDER}
        self.owners: dict[tuple[str, str], tuple[ObjectKey, ...]] = {}

    def add(self, resource: EnvoyResource, owners: tuple[ObjectKey, ...]) -> None:
        """`owners` sorted and unique; a resource added twice gets the union."""
        self.resources[resource.type_url][resource.name] = resource
        key = (resource.type_url, resource.name)
        previous = self.owners.get(key)
        self.owners[key] = owners if previous is None else tuple(sorted({*previous, *owners}))

    def freeze(self, errors: Sequence[TranslateError]) -> TranslateResult:
        resources = MappingProxyType(
            {t: MappingProxyType(dict(sorted(self.resources[t].items()))) for t in TYPE_ORDER}
        )
        return TranslateResult(resources=resources, owners=MappingProxyType(dict(sorted(self.owners.items()))), errors=tuple(errors))


class Translator:
    def __init__(self, plugins: Sequence[Plugin] | None = None) -> None:
        self.plugins: tuple[Plugin, ...] = builtin() if plugins is None else ordered(plugins)
        self.last_stats = CacheStats()
        # route → (its bytes, a serial number unique to this cache entry)
        self._routes: dict[ir.Route, tuple[bytes, int]] = {}
        self._serials = itertools.count()
        self._backends: dict[ir.Backend, tuple[EnvoyResource, EnvoyResource]] = {}
        self._listeners: dict[Hashable, EnvoyResource] = {}
        self._failovers: dict[tuple[str, str], EnvoyResource] = {}

    def translate(self, gateway: ir.Gateway) -> TranslateResult:
        stats = CacheStats()
        out = _Output()
        errors: list[TranslateError] = []
        known = {b.name for b in gateway.backends}

        routes: dict[ir.Route, tuple[bytes, int]] = {}
        listeners: dict[Hashable, EnvoyResource] = {}
        for lst in gateway.listeners:
            bodies = [serialize(extra) for plugin in self.plugins for extra in plugin.extra_routes(lst)]
            serials: list[Hashable] = []
            for r in lst.routes:
                entry = self._route(r, known, routes, stats, errors)
                if entry is None:
                    serials.append(r)  # left out: rare, so hashing it whole is fine
                else:
                    bodies.append(entry[0])
                    serials.append(entry[1])
            owners = tuple(sorted({r.owner for r in lst.routes}))
            out.add(make_resource(ROUTE, names.route_config(lst), route.route_config_bytes(names.route_config(lst), bodies)), owners)
            key = (lst.name, lst.address, lst.port, lst.tls, lst.ready_backends, lst.rate_limits, tuple(serials))
            listeners[key] = self._listener(key, lst, stats)
            out.add(listeners[key], owners)
        self._routes = routes
        self._listeners = listeners

        backends: dict[ir.Backend, tuple[EnvoyResource, EnvoyResource]] = {}
        for backend in gateway.backends:
            pair = self._backends.get(backend)
            if pair is None:
                stats.misses["backend"] += 1
                pair = (
                    make_resource(CLUSTER, names.cluster(backend.name), cluster.backend_cluster_bytes(backend)),
                    make_resource(ENDPOINT, names.cluster(backend.name), serialize(endpoint.load_assignment(backend))),
                )
            else:
                stats.hits["backend"] += 1
            backends[backend] = pair
            for resource in pair:
                out.add(resource, (backend.owner,))
        self._backends = backends

        self._add_failovers(gateway, known, out, stats)
        for plugin in self.plugins:
            for extra in plugin.extra_resources(gateway):
                out.add(make_resource(extra.type_url, extra.name, serialize(extra.message)), tuple(sorted(set(extra.owners))))
        self.last_stats = stats
        return out.freeze(errors)

    def _route(
        self,
        r: ir.Route,
        known: set[str],
        used: dict[ir.Route, tuple[bytes, int]],
        stats: CacheStats,
        errors: list[TranslateError],
    ) -> tuple[bytes, int] | None:
        if not r.backends or not all(
            wb.backend in known and (wb.failover_to is None or wb.failover_to in known) for wb in r.backends
        ):
            missing = sorted({n for wb in r.backends for n in (wb.backend, wb.failover_to) if n and n not in known})
            why = f"backend(s) {', '.join(missing)} not in the gateway" if missing else "no backend"
            errors.append(TranslateError(r.owner, f"route {r.name}: {why}; route left out"))
            return None
        entry = self._routes.get(r)
        if entry is not None:
            stats.hits["route"] += 1
        else:
            stats.misses["route"] += 1
            try:
                entry = (serialize(self.route_message(r)), next(self._serials))
            except ValueError as err:
                errors.append(TranslateError(r.owner, f"route {r.name}: {err}; route left out"))
                return None
        used[r] = entry
        return entry

    def route_message(self, r: ir.Route) -> Message:
        proto = route.build_route(r)
        for plugin in self.plugins:
            plugin.patch_route(r, proto)
        return proto

    def _listener(self, key: Hashable, lst: ir.Listener, stats: CacheStats) -> EnvoyResource:
        cached = self._listeners.get(key)
        if cached is None:
            stats.misses["listener"] += 1
            cached = make_resource(LISTENER, lst.name, serialize(listener.build_listener(lst, self.plugins)))
        else:
            stats.hits["listener"] += 1
        return cached

    def _add_failovers(self, gateway: ir.Gateway, known: set[str], out: _Output, stats: CacheStats) -> None:
        owners: dict[tuple[str, str], set[ObjectKey]] = {}
        by_name = {b.name: b for b in gateway.backends}
        for lst in gateway.listeners:
            for r in lst.routes:
                for wb in r.backends:
                    if wb.failover_to and wb.failover_to != wb.backend and {wb.backend, wb.failover_to} <= known:
                        pair = (wb.backend, wb.failover_to)
                        owners.setdefault(pair, {by_name[pair[0]].owner, by_name[pair[1]].owner}).add(r.owner)
        cache: dict[tuple[str, str], EnvoyResource] = {}
        for pair in sorted(owners):
            resource = self._failovers.get(pair)
            if resource is None:
                stats.misses["failover"] += 1
                resource = make_resource(CLUSTER, names.failover_cluster(*pair), serialize(cluster.failover_cluster(*pair)))
            else:
                stats.hits["failover"] += 1
            cache[pair] = resource
            out.add(resource, tuple(sorted(owners[pair])))
        self._failovers = cache


def translate(gateway: ir.Gateway, plugins: Sequence[Plugin] | None = None) -> TranslateResult:
    """One-shot translation without memoization across calls."""
    return Translator(plugins).translate(gateway)
