"""Routing scopes of a replaced listener, kept in the snapshot while it may still drain.

A scoped listener's scopes and tables are keyed and named after the listener
(routing_engine/translate/scopes.py), so a listener change renames them all. An unscoped
listener's old RouteConfiguration simply stays with Envoy while the old listener drains
its keep-alive connections (Envoy holds what it subscribed to). Scopes are different:
Envoy subscribes to them by wildcard and takes each response as the whole set, so scopes
that leave the snapshot leave Envoy, and connections still draining on the old listener
would get 404 for every request (measured on Envoy 1.40: docs/decisions.md).

So when a group's listeners change, the scopes that left the compile are kept in the
group's snapshot, with the tables they select, until its listeners change again: one
generation, the one that may still be draining. Only the listener they were built for
can select them (their keys carry its tag), so keeping them is safe; new Envoys receive
them too and never use them. They are not the compile's resources (the engine's output
is unchanged), so they have no owners and take no part in Programmed.
"""

from __future__ import annotations

from envoy.config.route.v3 import scoped_route_pb2
from routing_engine.world import Compiled, EnvoyResource
from xds_server.types import LISTENER, ROUTE, SCOPED_ROUTE


class RetiredScopes:
    """One node group's retired generation of scopes and tables."""

    def __init__(self) -> None:
        self._listeners: dict[str, str] | None = None  # listener name → version, last compile
        self._kept: tuple[EnvoyResource, ...] = ()

    def update(self, before: Compiled | None, now: Compiled) -> tuple[EnvoyResource, ...]:
        """The resources to serve beside `now`'s: when `now`'s listeners differ from the
        last compile's (`before`), the scopes `before` had and `now` has not, with their
        tables; else what was kept already."""
        listeners = {name: r.version for name, r in now.resources.get(LISTENER, {}).items()}
        if before is not None and self._listeners is not None and listeners != self._listeners:
            kept_scopes = now.resources.get(SCOPED_ROUTE, {})
            gone = [r for name, r in before.resources.get(SCOPED_ROUTE, {}).items() if name not in kept_scopes]
            tables = sorted({_table(r) for r in gone})
            old_tables, new_tables = before.resources.get(ROUTE, {}), now.resources.get(ROUTE, {})
            self._kept = (*gone, *(old_tables[t] for t in tables if t in old_tables and t not in new_tables))
        self._listeners = listeners
        return self._kept


def _table(scope: EnvoyResource) -> str:
    name: str = scoped_route_pb2.ScopedRouteConfiguration.FromString(scope.body).route_configuration_name
    return name
