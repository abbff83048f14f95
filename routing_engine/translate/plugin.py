"""The feature-plugin interface of the xDS translator, and the HTTP filter order.

Modelled on Envoy Gateway's translator: every HTTP feature (health, model match, jwt,
api key, rate limit, tls) is one module with one object implementing a few hooks, each
given only IR objects and the proto it edits:

- `http_filters(listener)`   the HTTP filters the feature adds to the listener's HCM;
- `patch_hcm(listener, hcm)`  other HttpConnectionManager settings (after all filters);
- `patch_listener(listener, proto)`  listener-level changes (e.g. a TLS transport socket);
- `extra_routes(listener)`   routes placed before every user route (e.g. `/health`);
- `patch_route(route, proto)`  per-route config (`typed_per_filter_config`); it sees one
  route only, which is what lets the translator cache route protos per IR route;
- `extra_resources(gateway)`  resources the feature needs (a JWKS cluster, a secret);
- `listener_facet(route)`   what of one route the listener-level hooks above read
  (`http_filters`, `patch_hcm`, `patch_listener`, `extra_routes`, `extra_resources`),
  besides its name, position and owner, which the translator compares itself. After a
  route edit those hooks run again only when some plugin's facet of that route changed;
  the default is the whole route, which is always safe.

A plugin configured per ModelServer owns the key of its name in the server's
`spec.extensions` and names the pydantic model of its value in `extension`: the engine
validates the key against it (`routing_engine.api.extensions`; a bad value fails that
server alone, naming the field) and hands the parsed value to the hooks through the IR
(`ir.Route.extensions`, `ir.Listener.extensions`).

Filter order is explicit: each plugin carries its `rank` (lower runs first; ties break by
name so the order never changes between compiles and listeners never drain for nothing).
The table of built-in ranks is `RANKS`; the router is always last. A plugin without an
integer rank is refused by `ordered`, so forgetting it fails loudly, not silently.

Third-party plugins are objects published in the `modelroute.plugins` entry-point group.
`discover` reads installed package metadata (I/O), so it runs at start-up in the CLI or
server, never inside the pure compile; its result is passed to `Translator(plugins=...)`.

This module imports no feature: the built-in ones are listed in `builtin.py`, above them.
Plugin authors and callers outside the engine use the stable surface `routing_engine.plugins`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TypeAlias

from google.protobuf.message import Message
from pydantic import BaseModel

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from routing_engine import ir
from routing_engine.api.resources import ObjectKey

ENTRY_POINT_GROUP = "modelroute.plugins"

# The HTTP filter order (lower first). Auth runs before rate limits so unauthenticated
# requests never spend a tenant's tokens; /ready is answered before anything else.
RANKS: dict[str, int] = {
    "health": 100,
    "model_match": 200,
    "jwt": 300,
    "apikey": 350,
    "ratelimit": 500,  # the per-Envoy bucket, then the shared (Redis) limit, in that order
    "prefix_affinity": 550,  # buffers the body: only requests that passed auth and limits
    "usage": 600,  # reads the answer's token usage; after auth and limits, so refused requests skip it
    "tls": 900,  # adds no HTTP filter; ranked so every plugin has one
    "models_list": 910,  # adds no HTTP filter: GET <base>/models answered by Envoy
    "access_log": 920,  # adds no HTTP filter: the JSON access log and the per-variant stats
    "tracing": 930,  # adds no HTTP filter: OpenTelemetry tracing (optional, off by default)
}
ROUTER_RANK = 10_000

HttpFilter: TypeAlias = hcm_pb2.HttpFilter


@dataclass(frozen=True, slots=True)
class ExtraResource:
    """A resource a plugin adds, with the objects it comes from (for NACK → status)."""

    type_url: str
    name: str
    message: Message
    owners: tuple[ObjectKey, ...] = ()


class PluginError(Exception):
    """A plugin that cannot take part in translation (no rank, duplicate name)."""


class Plugin:
    """Base class with no-op hooks: a plugin overrides only what its feature touches."""

    name: str = ""
    rank: int | None = None
    # The model of `spec.extensions.<name>` (None: the plugin owns no key).
    extension: type[BaseModel] | None = None

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        return ()

    def patch_hcm(self, listener: ir.Listener, hcm: hcm_pb2.HttpConnectionManager) -> None:
        return None

    def patch_listener(self, listener: ir.Listener, proto: listener_pb2.Listener) -> None:
        return None

    def extra_routes(self, listener: ir.Listener) -> Sequence[route_components_pb2.Route]:
        return ()

    def patch_route(self, route: ir.Route, proto: route_components_pb2.Route) -> None:
        return None

    def extra_resources(self, gateway: ir.Gateway) -> Iterable[ExtraResource]:
        return ()

    def listener_facet(self, route: ir.Route) -> Hashable:
        """What `http_filters`, `patch_hcm`, `patch_listener`, `extra_routes` and
        `extra_resources` read of `route` besides its name and owner (None: nothing). Two
        routes with equal facets for every plugin give the same listener, plugin routes
        and plugin resources."""
        return route


def ordered(plugins: Iterable[Plugin]) -> tuple[Plugin, ...]:
    """Plugins in filter order; refuses unranked plugins and duplicate names."""
    seen: set[str] = set()
    checked: list[Plugin] = []
    for plugin in plugins:
        rank = getattr(plugin, "rank", None)
        if not isinstance(rank, int) or isinstance(rank, bool) or rank >= ROUTER_RANK:
            raise PluginError(f"plugin {plugin.name or type(plugin).__name__!r} has no valid rank (an int below {ROUTER_RANK})")
        if not plugin.name:
            raise PluginError(f"plugin {type(plugin).__name__} has no name")
        if plugin.name in seen:
            raise PluginError(f"two plugins are named {plugin.name!r}")
        seen.add(plugin.name)
        checked.append(plugin)
    return tuple(sorted(checked, key=lambda p: (p.rank, p.name)))


def extension_models(plugins: Iterable[Plugin]) -> dict[str, type[BaseModel]]:
    """The `spec.extensions` keys these plugins own, with the model of each one's value
    (what `resolve` and `modelroute validate` check a ModelServer's keys against)."""
    return {p.name: p.extension for p in plugins if p.extension is not None}


def discover(group: str = ENTRY_POINT_GROUP) -> tuple[Plugin, ...]:
    """Third-party plugins from installed packages: each entry point names a Plugin
    subclass or instance. Reads package metadata, so call it at start-up only."""
    found: list[Plugin] = []
    for entry in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        try:
            loaded = entry.load()
        except Exception as err:  # a broken plugin package: say which, not a bare traceback
            raise PluginError(f"entry point {entry.name!r} in {group} ({entry.value}) could not be loaded: "
                              f"{type(err).__name__}: {err}") from err
        plugin = loaded() if isinstance(loaded, type) else loaded
        if not isinstance(plugin, Plugin):
            raise PluginError(f"entry point {entry.name!r} in {group} is not a modelroute Plugin")
        found.append(plugin)
    return tuple(found)
