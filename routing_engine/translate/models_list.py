"""`GET <base>/models` on the gateway: OpenAI's model list, for the models a port routes.

OpenAI clients ask `GET /v1/models` (their base URL + `/models`) which models there are;
AI gateways answer with the models they route. Here those are the `match.model` values of
a listener's routes, and the base is where those routes take requests: a route on the
segment prefix `/v1` (a front door or `match.path: /v1/*`) lists at `/v1/models`, an
exact `/x/v1/chat/completions` (or `/completions`, `/embeddings`) at `/x/v1/models`; a
route on `/` lists at `/v1/models`, OpenAI's own path. Each listing is a direct response
from Envoy (`{"object": "list", "data": [{"id", "object": "model", "created": 0,
"owned_by": <namespace>}]}`), before every user route, for GET only; listeners without a
model match get nothing, so their paths are untouched. A route on
`/v1/chat/completions` itself (prefix or exact) lists at `/v1/models` too.

Who sees what: a caller is shown only models it could reach. When every model of a base
needs the same credentials, the listing needs them too (the JWT and API-key checks of
those routes) and names them all; otherwise it needs none and names only the models that
need none, so a model behind authentication is never named to an anonymous caller.

LoRA adapters (issue 18): the routes resolve derives for an adapter are listed where the
route they come from is (a base some user route with a `match.model` already lists), and
never open a listing of their own: a ModelServer's own path keeps reaching its replicas,
whose `/v1/models` names the base model and its adapters.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from routing_engine import ir
from routing_engine.translate.apikey import ApiKeyPlugin
from routing_engine.translate.jwt import JwtPlugin
from routing_engine.translate.plugin import RANKS, Plugin

MODELS_SUFFIX = "/models"
OPENAI_BASE = "/v1"  # where OpenAI clients look when a route takes every path
_ENDPOINTS = ("/chat/completions", "/completions", "/embeddings")


def base_of(route: ir.Route) -> str | None:
    """The OpenAI base URL path a model route serves, or None (a glob, another endpoint)."""
    path = route.match.path
    if path.kind not in ("segment_prefix", "exact"):
        return None
    value = path.value.rstrip("/") or "/"
    for endpoint in _ENDPOINTS:  # `/v1/chat/completions` (prefix or exact) serves base `/v1`
        if value.endswith(endpoint):
            return value[: -len(endpoint)] or OPENAI_BASE
    if path.kind == "segment_prefix":
        return OPENAI_BASE if value == "/" else value
    return None


def listing(models: Sequence[ir.Route]) -> str:
    entries = {r.match.model: r.owner.namespace for r in models if r.match.model is not None}
    data = [{"id": model, "object": "model", "created": 0, "owned_by": owner} for model, owner in sorted(entries.items())]
    return json.dumps({"object": "list", "data": data}, separators=(",", ":"))


class ModelsListPlugin(Plugin):
    name = "models_list"
    rank = RANKS["models_list"]

    def listener_facet(self, route: ir.Route) -> Hashable:
        """What a listing reads of a model route; other routes are never listed."""
        if route.match.model is None:
            return None
        return route.match.model, route.match.path, route.derived_from is None, route.auth

    def extra_routes(self, listener: ir.Listener) -> Sequence[rc.Route]:
        by_base: dict[str, list[ir.Route]] = {}
        for route in listener.routes:
            base = base_of(route) if route.match.model is not None else None
            if base is not None:
                by_base.setdefault(base, []).append(route)
        listed = {base for base, routes in by_base.items() if any(r.derived_from is None for r in routes)}
        return [self._route(base, models) for base, models in sorted(by_base.items()) if base in listed]

    def _route(self, base: str, models: Sequence[ir.Route]) -> rc.Route:
        gated = bool(models) and len({r.auth for r in models}) == 1 and models[0].auth != ()
        shown = models if gated else [r for r in models if not r.auth]
        proto = rc.Route(name=f"modelroute/models{base}")
        proto.match.path = base + MODELS_SUFFIX
        proto.match.headers.add(name=":method").string_match.exact = "GET"
        proto.direct_response.status = 200
        proto.direct_response.body.inline_string = listing(shown)
        header = proto.response_headers_to_add.add()
        header.header.key, header.header.value = "content-type", "application/json"
        header.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        if gated:  # the same checks as the models' own routes
            try:
                for auth in (JwtPlugin(), ApiKeyPlugin()):
                    auth.patch_route(models[0], proto)
            except ValueError:  # keys Envoy would refuse: those routes are left out, name none of them
                return self._route(base, [r for r in models if not r.auth])
        return proto
