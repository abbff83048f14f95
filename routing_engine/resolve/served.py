"""What each installed ModelRoute serves, group by group (`Compiled.routes`).

Status views show a route's split as Envoy was given it (live canary weights included),
never a second reading of the spec; this is where the engine says so, from the route's
outcome rather than from its Envoy routes, so nothing downstream has to recognise a
group or a fallback by its route name:
- a route is installed when it compiled and is in the target's scope (the routes the
  listeners carry);
- its groups are its outcome's group routes in order, then its fallback catch-all;
- a group whose match names a LoRA adapter is narrowed to the backends that declare it,
  exactly as `inference.expand` narrows it on the listener; the copies `expand` adds for
  each adapter are part of their group and are not shown.

A route's view depends on its outcome only (a change to a server it references
re-resolves it), so views are kept per outcome object and the mapping is patched, not
rebuilt, when a few routes changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from routing_engine.api.resources import ObjectKey
from routing_engine.resolve.inference import expand
from routing_engine.resolve.listeners import route_in_scope
from routing_engine.resolve.routes import RouteOutcome
from routing_engine.resolve.servers import ServerOutcome
from routing_engine.world import ServedGroup, ServedRoute, ServedSplit, Target


def served_route(outcome: RouteOutcome, servers: Mapping[ObjectKey, ServerOutcome]) -> ServedRoute:
    """The view of a compiled route (`outcome.routes` non-empty)."""
    backends = {s.backend.name: s.backend for key in outcome.servers
                if (s := servers.get(key)) is not None and s.backend is not None}
    groups = []
    for n, route in enumerate(outcome.routes):
        if route.match.model is not None:  # only a route naming a model can be narrowed in place
            route = expand(route, backends)[-1]
        splits = tuple(ServedSplit(backends[b.backend].owner, b.weight) for b in route.backends if b.backend in backends)
        groups.append(ServedGroup(route.match, splits, fallback=n >= len(outcome.groups)))
    assert outcome.front_door is not None  # a compiled route has one
    return ServedRoute(outcome.front_door, tuple(groups))


class ServedRoutes:
    """`served_route` of every installed route, for one target, kept across compiles."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._views: dict[ObjectKey, tuple[RouteOutcome, ServedRoute]] = {}
        self._last: dict[ObjectKey, ServedRoute] | None = None
        self._result: Mapping[ObjectKey, ServedRoute] = MappingProxyType({})

    def build(self, routes: Mapping[ObjectKey, RouteOutcome], changed: set[ObjectKey] | None,
              servers: Mapping[ObjectKey, ServerOutcome]) -> Mapping[ObjectKey, ServedRoute]:
        """`routes` in key order; `changed`: the keys whose outcome is not last call's
        object (None: unknown, all)."""
        if changed is not None and self._last is not None:
            if not changed:
                return self._result
            patched = dict(self._last)
            for key in changed:
                outcome = routes.get(key)
                if outcome is None or not self._installed(outcome):
                    patched.pop(key, None)
                    self._views.pop(key, None)
                elif key not in patched:
                    break  # a new key: it must take its place in key order
                else:
                    patched[key] = self._view(key, outcome, servers)
            else:
                return self._publish(patched)
        views: dict[ObjectKey, tuple[RouteOutcome, ServedRoute]] = {}
        result: dict[ObjectKey, ServedRoute] = {}
        for key, outcome in routes.items():
            if not self._installed(outcome):
                continue
            known = self._views.get(key)
            if known is None or known[0] is not outcome:
                known = (outcome, served_route(outcome, servers))
            views[key] = known
            result[key] = known[1]
        self._views = views
        return self._publish(result)

    def _installed(self, outcome: RouteOutcome) -> bool:
        return outcome.compiled and route_in_scope(outcome, self._target)

    def _view(self, key: ObjectKey, outcome: RouteOutcome, servers: Mapping[ObjectKey, ServerOutcome]) -> ServedRoute:
        known = self._views.get(key)
        if known is None or known[0] is not outcome:
            known = self._views[key] = (outcome, served_route(outcome, servers))
        return known[1]

    def _publish(self, views: dict[ObjectKey, ServedRoute]) -> Mapping[ObjectKey, ServedRoute]:
        self._last = views
        self._result = MappingProxyType(views)
        return self._result
