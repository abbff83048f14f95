"""API key authentication (ext, `authentication.type: apiKey`) with Envoy's
`api_key_auth` filter (`envoy.extensions.filters.http.api_key_auth.v3`).

The listener-level filter is installed *disabled* with no keys; each route with an API
key policy enables it through a per-route `FilterConfig` carrying that policy's keys and
header. So routes without the policy (and `/health`, `/metrics`) are never checked, and
each ModelServer's keys admit requests to its own routes only. Missing or unknown key:
401 from Envoy. Keys end up in the RouteConfiguration, which only Envoy receives.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.api_key_auth.v3 import api_key_auth_pb2 as akpb
from routing_engine import ir
from routing_engine.translate.plugin import RANKS, HttpFilter, Plugin
from routing_engine.translate.xds import pack

API_KEY_FILTER = "envoy.filters.http.api_key_auth"
DEFAULT_HEADER = "authorization"


def api_key_policies(route: ir.Route) -> list[ir.ApiKeyAuth]:
    return [p for p in route.auth if isinstance(p, ir.ApiKeyAuth)]


def per_route(policy: ir.ApiKeyAuth) -> akpb.ApiKeyAuthPerRoute:
    config = akpb.ApiKeyAuthPerRoute()
    for index, key in enumerate(policy.keys):
        config.credentials.add(key=key, client=f"{policy.name}/{index}")
    config.key_sources.add(header=(policy.header or DEFAULT_HEADER).lower())
    return config


class ApiKeyPlugin(Plugin):
    name = "apikey"
    rank = RANKS["apikey"]

    def listener_facet(self, route: ir.Route) -> bool:
        return bool(api_key_policies(route))

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        if not any(api_key_policies(route) for route in listener.routes):
            return ()
        return [HttpFilter(name=API_KEY_FILTER, typed_config=pack(akpb.ApiKeyAuth()), disabled=True)]

    def patch_route(self, route: ir.Route, proto: rc.Route) -> None:
        if not route.auth:
            return
        policies = api_key_policies(route)
        if not policies:
            return
        # One api_key_auth instance per route: with several key policies, the first wins
        # (resolve produces at most one per ModelServer).
        enabled = rc.FilterConfig(config=pack(per_route(policies[0])))
        proto.typed_per_filter_config[API_KEY_FILTER].CopyFrom(pack(enabled))
