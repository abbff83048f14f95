"""JWT authentication (`authentication.type: jwt`, SPEC 3.1) with Envoy's `jwt_authn`.

The listener's filter lists every provider its routes use and a `requirement_map` entry
per distinct provider set; each route with JWT auth names its entry in per-route config
(`PerRouteConfig.requirement_name`). Routes without JWT carry no per-route config, and
jwt_authn then verifies nothing, so `/health` and open routes stay open. A route with
several auth policies requires all of them (`requires_all`). A request with no or an
invalid token gets 401 and never reaches a backend.

Tokens are read from the `Authorization: Bearer` header only: Envoy's default also takes
the `access_token` query parameter, which ends up in access logs, proxies' logs and
browser history, so it is switched off (OAuth 2.0 Security BCP). A token must carry `exp`
(`require_expiration`): a token without one would be valid forever.

Keys come inline from a Secret (`local_jwks`) or from `jwks_uri`, fetched by Envoy
through a LOGICAL_DNS cluster this plugin adds (`jwks/<provider>`), over TLS for https.
Envoy refuses a whole listener over one unusable inline JWKS, so a provider that would be
refused makes its routes fail translation alone (reported against their owner) instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from google.protobuf import duration_pb2

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from routing_engine import ir
from routing_engine.api.resources import ObjectKey
from routing_engine.envoy_rules import parse_jwks_uri
from routing_engine.jwks import provider_problem
from routing_engine import names
from routing_engine.translate.plugin import RANKS, ExtraResource, HttpFilter, Plugin
from routing_engine.translate.xds import CLUSTER, pack

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWKS_FETCH_TIMEOUT = duration_pb2.Duration(seconds=5)
JWKS_CACHE_DURATION = duration_pb2.Duration(seconds=300)
CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
# jwt_authn answers a token for another audience with 403 (every other rejection is 401)
AUDIENCE_DENIED = "response.code == 403 && response.code_details.startsWith('jwt_authn_access_denied')"


def jwt_providers(route: ir.Route) -> list[ir.JwtProvider]:
    return [p for p in route.auth if isinstance(p, ir.JwtProvider)]


def provider_config(provider: ir.JwtProvider) -> jwt_pb2.JwtProvider:
    config = jwt_pb2.JwtProvider(issuer=provider.issuer, audiences=list(provider.audiences), forward=provider.forward_header,
                                 require_expiration=True)
    config.from_headers.add(name="Authorization", value_prefix="Bearer ")
    if provider.jwks_inline is not None:
        config.local_jwks.inline_string = provider.jwks_inline
    elif provider.jwks_uri:
        config.remote_jwks.http_uri.uri = provider.jwks_uri
        config.remote_jwks.http_uri.cluster = names.jwks_cluster(provider)
        config.remote_jwks.http_uri.timeout.CopyFrom(JWKS_FETCH_TIMEOUT)
        config.remote_jwks.cache_duration.CopyFrom(JWKS_CACHE_DURATION)
    else:
        raise ValueError(f"JWT provider {provider.name!r} has neither jwks_uri nor inline JWKS")
    return config


def requirement(providers: Sequence[ir.JwtProvider]) -> jwt_pb2.JwtRequirement:
    ordered = sorted(p.name for p in providers)
    if len(ordered) == 1:
        return jwt_pb2.JwtRequirement(provider_name=ordered[0])
    every = jwt_pb2.JwtRequirement()
    every.requires_all.requirements.extend(jwt_pb2.JwtRequirement(provider_name=n) for n in ordered)
    return every


def jwks_cluster(provider: ir.JwtProvider) -> cluster_pb2.Cluster | None:
    """A DNS cluster for the JWKS host; https gets TLS with SNI set to the host. None for
    a URI Envoy could not fetch (resolve has already failed its server)."""
    url = parse_jwks_uri(provider.jwks_uri or "")
    if isinstance(url, str):
        return None
    name = names.jwks_cluster(provider)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.LOGICAL_DNS,
        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED,
        connect_timeout=JWKS_FETCH_TIMEOUT,
    )
    cluster.load_assignment.cluster_name = name
    address = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    address.address = url.host
    address.port_value = url.port
    if url.secure:
        cluster.transport_socket.name = "envoy.transport_sockets.tls"
        cluster.transport_socket.typed_config.CopyFrom(pack(tls_pb2.UpstreamTlsContext(sni=url.host)))
    return cluster


class JwtPlugin(Plugin):
    name = "jwt"
    rank = RANKS["jwt"]

    def listener_facet(self, route: ir.Route) -> tuple[ir.JwtProvider, ...]:
        return tuple(jwt_providers(route))

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        config = jwt_pb2.JwtAuthentication()
        for route in listener.routes:
            providers = jwt_providers(route)
            if not providers or any(provider_problem(p) for p in providers):
                continue  # no JWT, or a route patch_route refused (it is left out)
            for provider in providers:
                if provider.name not in config.providers:
                    config.providers[provider.name].CopyFrom(provider_config(provider))
            key = names.jwt_requirement(route)
            if key not in config.requirement_map:
                config.requirement_map[key].CopyFrom(requirement(providers))
        if not config.providers:
            return ()
        return [HttpFilter(name=JWT_FILTER, typed_config=pack(config))]

    def patch_hcm(self, listener: ir.Listener, hcm: hcm_pb2.HttpConnectionManager) -> None:
        """SPEC 3.1: any invalid token gets 401 (RFC 6750 `invalid_token`, which is what
        Envoy's own WWW-Authenticate header says); Envoy sends 403 for a wrong audience,
        so that one local reply is rewritten to 401."""
        if not any(jwt_providers(route) for route in listener.routes):
            return
        mapper = hcm.local_reply_config.mappers.add()
        mapper.filter.extension_filter.name = CEL_FILTER
        mapper.filter.extension_filter.typed_config.CopyFrom(pack(cel_pb2.ExpressionFilter(expression=AUDIENCE_DENIED)))
        mapper.status_code.value = 401

    def patch_route(self, route: ir.Route, proto: rc.Route) -> None:
        if not route.auth:  # most routes: 40,000 calls in a full compile
            return
        providers = jwt_providers(route)
        for provider in providers:
            problem = provider_problem(provider)
            if problem:
                raise ValueError(f"JWT provider {provider.name}: {problem}")
        if providers:
            per_route = jwt_pb2.PerRouteConfig(requirement_name=names.jwt_requirement(route))
            proto.typed_per_filter_config[JWT_FILTER].CopyFrom(pack(per_route))

    def extra_resources(self, gateway: ir.Gateway) -> Iterable[ExtraResource]:
        remote: dict[str, ir.JwtProvider] = {}
        owners: dict[str, set[ObjectKey]] = {}
        for listener in gateway.listeners:
            for route in listener.routes:
                if not route.auth:  # most routes: skipped without a call (10,000s per compile)
                    continue
                for provider in jwt_providers(route):
                    if provider.jwks_inline is None and not provider_problem(provider):
                        remote.setdefault(provider.name, provider)
                        owners.setdefault(provider.name, set()).add(route.owner)
        for name in sorted(remote):
            cluster = jwks_cluster(remote[name])
            if cluster is not None:
                yield ExtraResource(CLUSTER, cluster.name, cluster, tuple(sorted(owners[name])))
