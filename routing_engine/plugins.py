"""The plugin surface of the engine: what a feature plugin is written against, and what
callers outside the engine assemble the translator's plugin list with.

A plugin (built in or from another package) is a `Plugin` subclass with a `name` and a
`rank` (its HTTP filter's place: `RANKS` holds the built-in ones, lower runs first, the
router is always last at `ROUTER_RANK`), overriding only the hooks its feature touches:
each gets IR objects (`ir`) and the Envoy proto it edits, and packs typed configs with
`pack`. A plugin owning a key of a ModelServer's `spec.extensions` names the pydantic
model of its value (`Plugin.extension`); the engine validates the key against it and
hands the parsed value to the plugin in the IR (`ir.Route.extensions`,
`ir.Listener.extensions`). Third-party plugins are published in the `modelroute.plugins`
entry-point group (`ENTRY_POINT_GROUP`) and found by `discover` at start-up.

Import from here, not from `routing_engine.translate.*`: this module is the stable
surface (examples/plugins/cors is a plugin written against it alone); the translate
package's module layout is the engine's own business. docs/adding-a-filter.md shows both
ways of adding a filter.
"""

from __future__ import annotations

from routing_engine import ir
from routing_engine.api.resources import ObjectKey
from routing_engine.api.types import FieldError
from routing_engine.api.types import Spec as ExtensionSpec
from routing_engine.translate.builtin import builtin, with_builtin
from routing_engine.translate.plugin import (
    ENTRY_POINT_GROUP,
    RANKS,
    ROUTER_RANK,
    ExtraResource,
    HttpFilter,
    Plugin,
    PluginError,
    discover,
    extension_models,
    ordered,
)
from routing_engine.translate.tracing import TracingPlugin, TracingSettings
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, pack, type_url

__all__ = [
    # writing a plugin
    "Plugin", "HttpFilter", "ExtraResource", "RANKS", "ROUTER_RANK", "ir", "ObjectKey", "pack", "type_url",
    "CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "SECRET",
    # a plugin's `spec.extensions` key: its model's base (camelCase on the wire, unknown
    # fields refused with a hint, immutable) and the error a cross-field rule raises
    "ExtensionSpec", "FieldError",
    # assembling the plugin list
    "ENTRY_POINT_GROUP", "PluginError", "builtin", "discover", "extension_models", "ordered", "with_builtin",
    "TracingPlugin", "TracingSettings",
]
