"""Match on the OpenAI request body's `model` (SPEC 2, ModelRoute `match.model`).

`json_to_metadata` reads `model` from JSON request bodies into dynamic metadata
(`modelroute.model`); routes match it with a `dynamic_metadata` matcher (`route.py`).
The route is chosen when headers arrive, before the body: json_to_metadata clears the
route cache after writing the metadata, so the router re-picks the route with the model
known (SPEC 5: checked on Envoy 1.40). The filter buffers JSON bodies, so it is only
added to listeners that have a model match at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.http.json_to_metadata.v3 import json_to_metadata_pb2 as j2m
from routing_engine import ir
from routing_engine import names
from routing_engine.translate.plugin import RANKS, HttpFilter, Plugin
from routing_engine.translate.xds import pack

JSON_TO_METADATA_FILTER = "envoy.filters.http.json_to_metadata"
JSON_CONTENT_TYPE = r"(?i)application/json\s*(;.*)?"  # RE2, matched against the whole header


def uses_model_match(listener: ir.Listener) -> bool:
    return any(route.match.model is not None for route in listener.routes)


class ModelMatchPlugin(Plugin):
    name = "model_match"
    rank = RANKS["model_match"]

    def listener_facet(self, route: ir.Route) -> bool:
        return route.match.model is not None

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        if not uses_model_match(listener):
            return ()
        rule = j2m.JsonToMetadata.Rule(selectors=[j2m.JsonToMetadata.Selector(key="model")])
        rule.on_present.metadata_namespace = names.MODEL_METADATA_NAMESPACE
        rule.on_present.key = names.MODEL_METADATA_KEY
        rule.on_present.type = j2m.JsonToMetadata.STRING
        config = j2m.JsonToMetadata()
        config.request_rules.rules.append(rule)
        config.request_rules.allow_content_types_regex.google_re2.SetInParent()
        config.request_rules.allow_content_types_regex.regex = JSON_CONTENT_TYPE
        # Bodies sent without a content type (some scripts) are read as JSON too.
        config.request_rules.allow_empty_content_type = True
        return [HttpFilter(name=JSON_TO_METADATA_FILTER, typed_config=pack(config))]
