"""The built-in features, listed in one place.

`plugin.py` holds the interface every feature implements and the rank table; each feature
module imports it. This module imports every built-in feature module, so it sits above
them: nothing in translate imports it but the translator's default (no import cycle:
`tests/translate/test_import_graph.py`). A new built-in feature is one line here, its
rank in `plugin.RANKS`, and its module (docs/adding-a-filter.md).

Tracing is not listed: it needs a collector address, and the run modes add it when given
one (`modelroute/tracing.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

from routing_engine.translate.access_log import AccessLogPlugin
from routing_engine.translate.apikey import ApiKeyPlugin
from routing_engine.translate.health import HealthPlugin
from routing_engine.translate.jwt import JwtPlugin
from routing_engine.translate.model_match import ModelMatchPlugin
from routing_engine.translate.models_list import ModelsListPlugin
from routing_engine.translate.plugin import Plugin, ordered
from routing_engine.translate.prefix_affinity import PrefixAffinityPlugin
from routing_engine.translate.ratelimit import RateLimitPlugin
from routing_engine.translate.tls import TlsPlugin
from routing_engine.translate.usage import UsagePlugin

BUILTIN: tuple[type[Plugin], ...] = (
    HealthPlugin, ModelMatchPlugin, JwtPlugin, ApiKeyPlugin, RateLimitPlugin, PrefixAffinityPlugin, UsagePlugin,
    TlsPlugin, ModelsListPlugin, AccessLogPlugin,
)


def builtin() -> tuple[Plugin, ...]:
    """One fresh instance of each built-in feature, in filter order."""
    return ordered([cls() for cls in BUILTIN])


def with_builtin(extra: Iterable[Plugin] = ()) -> tuple[Plugin, ...]:
    """The built-in features plus `extra` (e.g. `discover()`'s), in filter order."""
    return ordered([*builtin(), *extra])
