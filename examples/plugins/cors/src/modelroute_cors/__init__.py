"""CORS for ModelServers: a modelroute plugin shipped as a package of its own.

It is written against `routing_engine.plugins` alone (the engine's stable plugin surface)
and found through the `modelroute.plugins` entry point of this package; modelroute itself
knows nothing of it.

`spec.extensions.cors` of a ModelServer says which browser origins may call its model
(`allowOrigins`, `allowMethods`, `allowHeaders`, `maxAge`). Envoy's CORS filter
(`envoy.filters.http.cors`) goes on every listener with a route that has a policy, and the
policy on each such route (`typed_per_filter_config`, a `CorsPolicy`):
- a preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) from an allowed
  origin is answered by Envoy with the `Access-Control-*` headers;
- a preflight from any other origin is answered by Envoy too, without
  `Access-Control-Allow-Origin`, so the browser refuses the call (preflights never reach
  a model);
- an actual request from an allowed origin gets `Access-Control-Allow-Origin` added.

Rank 250: after the model match (200: the route a request takes may depend on its body),
before authentication (JWT 300, API key 350), because preflights carry no credentials and
must be answered before authentication refuses them (Envoy Gateway orders them the same).

A route reaching several servers (a ModelRoute's split, its fallback, the path's owner)
takes the policy of those that set one; they must agree, otherwise the route is left out
with an error naming them (a browser must get one answer for one URL).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from google.protobuf import wrappers_pb2
from pydantic import Field, field_validator

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.type.matcher.v3 import string_pb2
from routing_engine.plugins import ExtensionSpec, HttpFilter, Plugin, ir, pack

__all__ = ["CORS_FILTER", "CorsPlugin", "CorsSpec", "policy"]

CORS_FILTER = "envoy.filters.http.cors"
_ORIGIN = re.compile(r"^https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token: method and header names


class CorsSpec(ExtensionSpec):
    """`spec.extensions.cors`."""

    allow_origins: list[str] = Field(
        min_length=1, description='Origins allowed to call the model: "https://app.example.com", a wildcard '
                                  'subdomain "https://*.example.com", or "*" for any')
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST"],
                                     description="Methods a cross-origin request may use. Default GET, POST")
    allow_headers: list[str] = Field(default_factory=list,
                                     description="Request headers a cross-origin request may send, e.g. "
                                                 "content-type, authorization")
    max_age: Annotated[int, Field(ge=0, le=86_400, strict=True)] | None = Field(
        default=None, description="Seconds a browser may cache a preflight's answer (at most 86400)")

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f'"{origin}" is not an origin: write scheme://host[:port] with no path '
                                 '(e.g. https://app.example.com, https://*.example.com), or "*"')
        return origins

    @field_validator("allow_methods", "allow_headers")
    @classmethod
    def _tokens(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _TOKEN.match(name):
                raise ValueError(f'"{name}" is not a method or header name')
        return names


def _origin_matcher(origin: str) -> string_pb2.StringMatcher:
    if origin == "*":
        return string_pb2.StringMatcher(safe_regex={"regex": ".*"})
    if origin.startswith(("http://*.", "https://*.")):
        scheme, rest = origin.split("://*.", 1)
        return string_pb2.StringMatcher(safe_regex={"regex": f"(?i){scheme}://[^./]+\\.{re.escape(rest)}"})
    return string_pb2.StringMatcher(exact=origin, ignore_case=True)


def policy(spec: CorsSpec) -> cors_pb2.CorsPolicy:
    """The per-route policy. Preflights from other origins are answered by Envoy, not
    forwarded: an OPTIONS request has no business with a model."""
    config = cors_pb2.CorsPolicy(allow_methods=",".join(spec.allow_methods),
                                 allow_headers=",".join(spec.allow_headers),
                                 forward_not_matching_preflights=wrappers_pb2.BoolValue(value=False))
    config.allow_origin_string_match.extend(_origin_matcher(o) for o in spec.allow_origins)
    if spec.max_age is not None:
        config.max_age = str(spec.max_age)
    return config


class CorsPlugin(Plugin):
    name = "cors"
    rank = 250
    extension = CorsSpec

    def listener_facet(self, route: ir.Route) -> bool:
        return bool(route.extension(self.name))

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        if not any(route.extension(self.name) for route in listener.routes):
            return ()
        return [HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors()))]

    def patch_route(self, route: ir.Route, proto: route_components_pb2.Route) -> None:
        found = route.extension(self.name)
        if not found:
            return
        if len({e.canonical for e in found}) > 1:
            servers = ", ".join(f"{e.server.namespace}/{e.server.name}" for e in found)
            raise ValueError(f"the ModelServers it reaches ({servers}) set different spec.extensions.cors; "
                             "give them one policy")
        proto.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(policy(found[0].value)))
