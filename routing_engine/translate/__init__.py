"""IR → Envoy xDS resources (Listener, RouteConfiguration, Cluster,
ClusterLoadAssignment, Secret), one module per driver and per feature plugin.

Comes after `routing_engine.resolve` (which produces `ir.Gateway`) and before the xDS
server (which serves the `EnvoyResource`s). `oneshot.py` is translation in one plain
pass (the definition); `routing_engine.incremental.Translator` computes the same with
memory across compiles. `plugin.py` holds the plugin interface and filter order.
"""

from routing_engine.translate.oneshot import translate
from routing_engine.translate.result import TranslateError, TranslateResult

__all__ = ["TranslateError", "TranslateResult", "translate"]
