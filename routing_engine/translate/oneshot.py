"""`translate(gateway)`: IR gateway → serialized xDS resources, in one plain pass.

This is the definition of translation; `routing_engine.incremental.Translator` computes
the same result with memory across runs, and tests compare the two after random edit
sequences. For each listener: every route's `Route` (feature-free part from `route.py`,
then each plugin's `patch_route`), the plugins' routes before the listener's own, the
scope depth (`scopes.py`), the Listener (`listener.py`), and its route table(s): one
RouteConfiguration, or scoped tables and scopes (`scoped_layout.py`). Then each
backend's Cluster and ClusterLoadAssignment, the same two per (primary, spare) pair some
route fails over through, and the plugins' extra resources. A resource added
twice gets the later body and the union of owners; both levels come out sorted.

Translation is best effort and never raises: a route that cannot be built (a backend
missing from the gateway, an invalid policy, a plugin's route hook failing) is left out
and reported in `errors` with its owner; a listener whose plugin hooks fail is left out
(its port fails closed) with an error on each of its routes' owners; a plugin whose
`extra_resources` fails adds none, with an error on every route's owner. Every other
route still compiles, so one bad object never takes down unrelated routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import NamedTuple

from routing_engine import ir, names
from routing_engine.api.resources import ObjectKey
from routing_engine.translate import cluster, endpoint, listener, route, scoped_layout, scopes
from routing_engine.translate.builtin import builtin
from routing_engine.translate.plugin import Plugin, ordered
from routing_engine.translate.result import (Collected, TranslateError, TranslateResult, failover_owners,
                                             failover_pairs, failover_resources, failure, make_resource,
                                             needed_backends, unknown_backends)
from routing_engine.translate.wire import framed_route, route_config_bytes
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_ORDER, serialize

Owners = tuple[ObjectKey, ...]


class _Built(NamedTuple):
    """A route as its table needs it (`scoped_layout.Entry`)."""

    route: ir.Route
    framed: bytes
    serial: int


def translate(gateway: ir.Gateway, plugins: Sequence[Plugin] | None = None, *, scoped: bool = True) -> TranslateResult:
    """`scoped=False` keeps one RouteConfiguration per listener whatever its size."""
    ranked = builtin() if plugins is None else ordered(plugins)
    known = frozenset(b.name for b in gateway.backends)
    out = Collected()
    errors: list[TranslateError] = []
    users: dict[tuple[str, str], set[ObjectKey]] = {}  # failover pair → owners of routes using it
    for lst in gateway.listeners:
        try:
            built, route_errors = _routes(lst, known, ranked)
            _listener(lst, built, ranked, scoped, out)
        except Exception as err:  # a plugin's listener hook failed: this port fails closed, alone
            errors.extend(TranslateError(owner, f"listener {lst.name}: {failure(err)}; listener left out")
                          for owner in sorted({r.owner for r in lst.routes}))
            continue
        errors.extend(route_errors)
        for b in built:
            for pair in failover_pairs(b.route):
                users.setdefault(pair, set()).add(b.route.owner)
    by_name = {b.name: b for b in gateway.backends}
    for backend in gateway.backends:
        name = names.cluster(backend.name)
        out.add(make_resource(CLUSTER, name, cluster.backend_cluster_bytes(backend)), (backend.owner,))
        out.add(make_resource(ENDPOINT, name, endpoint.load_assignment_bytes(backend)), (backend.owner,))
    for (primary, fallback), owners in sorted(users.items()):
        for resource in failover_resources(by_name[primary], by_name[fallback]):
            out.add(resource, failover_owners(by_name[primary], by_name[fallback], owners))
    for plugin in ranked:
        try:
            extras = list(plugin.extra_resources(gateway))
        except Exception as err:  # its resources are missing: say so on every object they may serve
            errors.extend(TranslateError(o, f"plugin {plugin.name}: {failure(err)}; its resources left out")
                          for o in sorted({r.owner for lst in gateway.listeners for r in lst.routes}))
            continue
        for extra in extras:
            out.add(make_resource(extra.type_url, extra.name, serialize(extra.message)), tuple(sorted(set(extra.owners))))
    return TranslateResult(
        resources=MappingProxyType({t: MappingProxyType(dict(sorted(out.resources.get(t, {}).items()))) for t in TYPE_ORDER}),
        owners=MappingProxyType(dict(sorted(out.owners.items()))), errors=tuple(errors))


def _routes(lst: ir.Listener, known: frozenset[str], plugins: Sequence[Plugin]
            ) -> tuple[list[_Built], list[TranslateError]]:
    """Each route's framed `Route`; those that cannot be built are left out, with an error."""
    built: list[_Built] = []
    errors: list[TranslateError] = []
    for r in lst.routes:
        if not r.backends or not known.issuperset(needed_backends(r)):
            errors.append(unknown_backends(r, known))
            continue
        try:
            proto = route.build_route(r)
            for plugin in plugins:
                plugin.patch_route(r, proto)
            body = serialize(proto)
        except ValueError as err:
            errors.append(TranslateError(r.owner, f"route {r.name}: {err}; route left out"))
            continue
        except Exception as err:  # a plugin's route hook failed: this route fails alone
            errors.append(TranslateError(r.owner, f"route {r.name}: {failure(err)}; route left out"))
            continue
        built.append(_Built(r, framed_route(body), len(built)))
    return built, errors


def _listener(lst: ir.Listener, built: Sequence[_Built], plugins: Sequence[Plugin], scoped: bool,
              out: Collected) -> None:
    """The listener's Listener and route table(s), its plugins' routes first."""
    extras = [extra for plugin in plugins for extra in plugin.extra_routes(lst)]
    paths = [(e.match.path or e.match.path_separated_prefix or e.match.prefix, framed_route(serialize(e))) for e in extras]
    depth = scopes.choose_depth([*(scopes.proto_depth(e.match) for e in extras),
                                 *(scopes.literal_depth(b.route.match.path) for b in built)],
                                len(extras) + len(built)) if scoped else 0
    owners = tuple(sorted({r.owner for r in lst.routes}))
    proto, tag = listener.build_listener(lst, plugins, scope_depth=depth)
    if depth:
        layout = scoped_layout.build(lst, tag, depth, paths, built, owners, make_resource, None, {})
        for t, found in layout.resources.items():
            for name, resource in found.items():
                out.add(resource, layout.owners[(t, name)])
    else:
        name = names.route_config(lst, tag)
        body = route_config_bytes(name, [*(b for _, b in paths), *(b.framed for b in built)])
        out.add(make_resource(ROUTE, name, body), owners)
    out.add(make_resource(LISTENER, lst.name, serialize(proto)), owners)
