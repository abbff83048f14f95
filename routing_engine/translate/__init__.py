"""IR → Envoy xDS resources (Listener, RouteConfiguration, Cluster,
ClusterLoadAssignment, Secret), one module per driver and per feature plugin.

Comes after `routing_engine.resolve` (which produces `ir.Gateway`) and before the xDS
server (which serves the `EnvoyResource`s). See `translator.py` for memoization and
`plugin.py` for the plugin interface and filter order.
"""

from routing_engine.translate.translator import TranslateError, TranslateResult, Translator, translate

__all__ = ["TranslateError", "TranslateResult", "Translator", "translate"]
