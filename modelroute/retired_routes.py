"""The route tables (and scopes) of a replaced listener, kept in the snapshot while it may
still drain, failing closed where the change touched a route.

Every route table, scope and scope key is named after the exact listener it was built for
(`listener/<port>/<tag>`, routing_engine/names.py), so a listener change (a port gaining
or losing an auth or rate-limit filter, a changed JWT provider or key) renames them all,
and the old listener keeps draining the keep-alive connections it accepted, still
routing them with the tables it knows. Two problems, one mechanism:

- **Scopes** are subscribed by wildcard and each response is the whole set, so scopes
  that leave the snapshot leave Envoy: the draining connections would get 404 for every
  request (measured on Envoy 1.40: docs/decisions.md). So they stay, one generation.
- **Fail closed on the draining connections** (SPEC 3.8): on its old tables, a route
  would go on being served the old way for as long as the listener drains (600 s by
  default): served without the authentication or rate limit just turned on, or with
  the JWT key just revoked. So the replaced listener's tables stay in the snapshot under
  their names, and every route that changed in the new generation, is gone from it, or
  carries configuration of an HTTP filter whose listener configuration changed, answers
  503 there instead. Envoy's drain strategy `immediate` (our Envoys run with it) closes
  the connection with that answer, and the client's next request reaches the new
  listener. Routes the change did not touch keep serving the draining connections.

If Envoy rejected the new listener, the old one stays active and gets the same tables:
the routes the rejected change touched answer 503 until it is fixed (the last good
config could serve them only without what the user just asked for); the others serve.

Kept until the group's listeners change again: one generation, the one that may still
be draining. Only the listener they were built for asks for them; new Envoys never do.
They are not the compile's resources, so they have no owners and take no part in
Programmed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from routing_engine.world import Compiled, EnvoyResource, envoy_resource
from xds_server.types import LISTENER, ROUTE, SCOPED_ROUTE

RETIRED_BODY = "this connection's listener was replaced: retry on a new connection\n"


class RetiredRoutes:
    """One node group's retired generation of route tables and scopes."""

    def __init__(self) -> None:
        self._listeners: dict[str, str] | None = None  # listener name → version, last compile
        self._kept: tuple[EnvoyResource, ...] = ()

    def update(self, before: Compiled | None, now: Compiled) -> tuple[EnvoyResource, ...]:
        """The resources to serve beside `now`'s: when `now`'s listeners differ from the
        last compile's (`before`), the tables and scopes of `before`'s replaced listeners
        (tables failing closed where the change touched them); else what was kept."""
        listeners = {name: r.version for name, r in now.resources.get(LISTENER, {}).items()}
        if before is not None and self._listeners is not None and listeners != self._listeners:
            self._kept = _retired(before, now)
        self._listeners = listeners
        return self._kept


def _retired(before: Compiled, now: Compiled) -> tuple[EnvoyResource, ...]:
    new_tables, new_scopes = now.resources.get(ROUTE, {}), now.resources.get(SCOPED_ROUTE, {})
    live = {_generation(name) for name in (*new_tables, *new_scopes)}
    scopes = [r for name, r in before.resources.get(SCOPED_ROUTE, {}).items()
              if name not in new_scopes and _generation(name) not in live]
    tables = [r for name, r in before.resources.get(ROUTE, {}).items()
              if name not in new_tables and _generation(name) not in live]
    if not tables:
        return tuple(scopes)
    replaced = {_listener_of(t.name) for t in tables}
    successors = [(_listener_of(name), route_pb2.RouteConfiguration.FromString(t.body))
                  for name, t in new_tables.items() if _listener_of(name) in replaced]
    routes: dict[str, list[rc.Route]] = {}
    for listener, table in successors:
        routes.setdefault(listener, []).extend(r for host in table.virtual_hosts for r in host.routes)
    changes = _changes(before.resources.get(LISTENER, {}), now.resources.get(LISTENER, {}), routes)
    latest = {r.name: r.SerializeToString(deterministic=True) for found in routes.values() for r in found}
    return (*scopes, *(_fail_closed(t, latest, changes.get(_listener_of(t.name))) for t in tables))


def _generation(name: str) -> str:
    """`listener/<port>/<tag>` of a table or scope name: the listener it was built for."""
    return "/".join(name.split("/", 3)[:3])


def _listener_of(name: str) -> str:
    """`listener/<port>` of a table or scope name: its listener's (stable) name."""
    return "/".join(name.split("/", 2)[:2])


@dataclass(frozen=True)
class _Change:
    """What changed on one listener between the generations, as it bears on its routes."""

    whole: bool  # the transport (TLS) changed, or a filter came that configures no route: all routes
    filters: dict[str, bytes]  # changed or added filters → their configs (old and new, joined)

    def touches(self, route: rc.Route) -> bool:
        if self.whole or not self.filters.keys().isdisjoint(route.typed_per_filter_config):
            return True
        return any(c.encode() in config for c in _clusters(route) for config in self.filters.values())


def _clusters(route: rc.Route) -> list[str]:
    return [c for c in (route.route.cluster, *(w.name for w in route.route.weighted_clusters.clusters)) if c]


def _changes(before: Mapping[str, EnvoyResource], now: Mapping[str, EnvoyResource],
             routes: Mapping[str, Iterable[rc.Route]]) -> dict[str, _Change]:
    """Per replaced listener (by name): a route is touched by its listener's change when a
    filter it has per-route configuration for changed, when a changed filter's listener
    configuration names its cluster (local rate limits keep their buckets there), or
    when the change holds for every route: new TLS, or a new filter no route configures
    (it applies to all of them: a shared rate limit, unless its configuration names
    clusters: a local rate limit's). A filter that went away only relaxes."""
    changes: dict[str, _Change] = {}
    for name, old in before.items():
        new = now.get(name)
        if new is None or new.version == old.version:
            continue
        (a, tls_a), (b, tls_b) = _shape(old.body), _shape(new.body)
        configured = {f for route in routes.get(name, ()) for f in route.typed_per_filter_config}
        clusters = {c.encode() for route in routes.get(name, ()) for c in _clusters(route)}
        added = b.keys() - a.keys()
        everywhere = {f for f in added - configured if not any(c in b[f] for c in clusters)}
        changes[name] = _Change(
            whole=tls_a != tls_b or bool(everywhere),
            filters={f: a[f] + b[f] for f in a.keys() & b.keys() if a[f] != b[f]} | {f: b[f] for f in added})
    return changes


def _shape(listener_body: bytes) -> tuple[dict[str, bytes], bytes]:
    """A listener's HTTP filters (name → config) and its transport sockets."""
    filters: dict[str, bytes] = {}
    transports = b""
    for chain in listener_pb2.Listener.FromString(listener_body).filter_chains:
        transports += chain.transport_socket.SerializeToString(deterministic=True)
        for network_filter in chain.filters:
            hcm = hcm_pb2.HttpConnectionManager()
            if network_filter.typed_config.Unpack(hcm):
                for http_filter in hcm.http_filters:
                    filters[http_filter.name] = http_filter.SerializeToString(deterministic=True)
    return filters, transports


def _fail_closed(table: EnvoyResource, latest: Mapping[str, bytes], change: _Change | None) -> EnvoyResource:
    """`table` with every route the change touched (or that changed, or is gone) answering 503."""
    message = route_pb2.RouteConfiguration.FromString(table.body)
    for host in message.virtual_hosts:
        for route in host.routes:
            if (latest.get(route.name) == route.SerializeToString(deterministic=True)
                    and (change is None or not change.touches(route))):
                continue
            match, name = rc.RouteMatch(), route.name
            match.CopyFrom(route.match)
            route.Clear()
            route.name = name
            route.match.CopyFrom(match)
            route.direct_response.status = 503
            route.direct_response.body.inline_string = RETIRED_BODY
    return envoy_resource(ROUTE, table.name, message.SerializeToString(deterministic=True))
