"""The engine's entry point: `compile(world, target) -> Compiled` = resolve + translate.

Pure: no I/O, no clocks. Successive compiles of one target should go through one
`Compiler` (the control loop keeps one per node group): its `Resolver` reuses the
outcome of every object whose inputs did not change (`incremental/resolver.py`) and its
`Translator` the serialized routes, clusters and listeners (`incremental/translator.py`).

`static_bootstrap` turns a compile's dynamic resources into one bootstrap document that
Envoy loads with no control plane: listeners with their RouteConfiguration inline (a
scoped listener with its scopes inline, each with its table's routes of its key inline),
EDS clusters made STATIC with their ClusterLoadAssignment inline, SDS secrets as static
secrets, plus the admin listener on 127.0.0.1 and the `modelroute_admin` cluster that
`/metrics` routes to (the envoy/ bootstrap templates define the same cluster for the
dynamic case). `modelroute compile` prints it and tests feed it to `envoy --mode validate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from routing_engine import serialize
from routing_engine.api.resources import ObjectKey
from routing_engine import names
from routing_engine.incremental import Resolver, Translator
from routing_engine.resolve import resolve
from routing_engine.translate import TranslateError, scopes, translate
from routing_engine.translate.builtin import builtin
from routing_engine.translate.plugin import Plugin, extension_models, ordered
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET, pack
from routing_engine.world import Compiled, ConditionView, EnvoyResource, ObjectStatus, Target, World

ADMIN_PORT = 9901


def compile(world: World, target: Target, *, translator: Translator | None = None,  # noqa: A001
            resolver: Resolver | None = None, plugins: Sequence[Plugin] | None = None) -> Compiled:
    """One compile. With neither `translator` nor `resolver`: the definition, the one-shot
    `resolve` then the plain `translate` (with `plugins`, None: the built-in ones); a
    `Compiler` passes its own memoizing resolver and translator."""
    if translator is None:
        ranked = builtin() if plugins is None else ordered(plugins)
        extensions = extension_models(ranked)
        resolution = resolver.resolve(world, target) if resolver is not None else resolve(world, target, extensions)
        result = translate(resolution.gateway, ranked)
    else:
        resolution = (resolver or Resolver(extension_models(translator.plugins))).resolve(world, target)
        result = translator.translate(resolution.gateway)
    statuses = with_translate_errors(resolution.statuses, result.errors)
    return Compiled(resources=result.resources, statuses=statuses, owners=result.owners,
                    gateway=resolution.gateway, routes=resolution.routes)


class Compiler:
    """`compile` with memory: a `Resolver` and a `Translator` kept together, for
    successive compiles of one target (the control loop keeps one per node group). A
    one-route edit then re-resolves and re-serializes that route only; the output is
    the same as a fresh `compile` (tests compare them after random edit sequences).
    `plugins`: the features to translate with (None: the built-in ones); callers pass
    them here and never build a `Translator` themselves."""

    def __init__(self, plugins: Sequence[Plugin] | None = None) -> None:
        self.translator = Translator(plugins)
        self.resolver = Resolver(extension_models(self.translator.plugins))  # the keys its plugins own

    def compile(self, world: World, target: Target) -> Compiled:
        return compile(world, target, translator=self.translator, resolver=self.resolver)


def with_translate_errors(
    statuses: Mapping[ObjectKey, ObjectStatus], errors: tuple[TranslateError, ...]
) -> Mapping[ObjectKey, ObjectStatus]:
    """Routes translate left out make their owner `Accepted=False` (ValidationFailed)
    with every message; other objects' statuses are unchanged."""
    if not errors:
        return statuses
    merged = dict(statuses)
    by_owner: dict[ObjectKey, list[str]] = {}
    for error in errors:
        by_owner.setdefault(error.owner, []).append(error.message)
    for owner, messages in sorted(by_owner.items()):
        condition = ConditionView("Accepted", "False", "ValidationFailed", "; ".join(messages))
        current = merged.get(owner)
        if current is None:
            merged[owner] = ObjectStatus(phase="Failed", conditions=(condition,))
        else:
            others = tuple(c for c in current.conditions if c.type != "Accepted")
            merged[owner] = ObjectStatus(
                current.phase, (*others, condition), current.service_endpoint, current.active_routes
            )
    return MappingProxyType(merged)


def _inline_scopes(hcm: Any, routes: Mapping[str, EnvoyResource], scoped: Mapping[str, EnvoyResource]) -> None:
    """A scoped connection manager's scopes (those keyed with its tag), each with its
    table inline, trimmed to the routes of its key (a route whose key cannot be read
    from its match stays: it can only match requests of its own key anyway)."""
    depth = len(hcm.scoped_routes.scope_key_builder.fragments) - 1
    mutation = next(e for e in hcm.early_header_mutation_extensions if e.name == scopes.EARLY_MUTATION)
    early = header_mutation_pb2.HeaderMutation()
    mutation.typed_config.Unpack(early)
    tag = early.mutations[0].append.header.value.split("%", 1)[0]
    inline = hcm.scoped_routes.scoped_route_configurations_list
    for _, resource in sorted(scoped.items()):
        scope: Any = serialize.parse(resource)
        if scope.key.fragments[0].string_key != tag:
            continue
        key = tuple(f.string_key for f in scope.key.fragments[1:])
        table: Any = serialize.parse(routes[scope.route_configuration_name])
        for vhost in table.virtual_hosts:
            kept = [r for r in vhost.routes if _route_key(r.match, depth) in (None, key)]
            del vhost.routes[:]
            vhost.routes.extend(kept)
        scope.ClearField("route_configuration_name")
        scope.route_configuration.CopyFrom(table)
        inline.scoped_route_configurations.append(scope)


def _route_key(match: Any, depth: int) -> tuple[str, ...] | None:
    path = match.path or match.path_separated_prefix or match.prefix
    return scopes.key_of(path, depth) if path else None


def _static_listener(resource: EnvoyResource, routes: Mapping[str, EnvoyResource],
                     scoped: Mapping[str, EnvoyResource]) -> Any:
    listener: Any = serialize.parse(resource)
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            hcm = hcm_pb2.HttpConnectionManager()
            if not network_filter.typed_config.Unpack(hcm):
                continue
            if hcm.HasField("rds"):
                route_config = serialize.parse(routes[hcm.rds.route_config_name])
                hcm.route_config.CopyFrom(route_config)  # replaces the rds oneof
                network_filter.typed_config.CopyFrom(pack(hcm))
            elif hcm.HasField("scoped_routes") and hcm.scoped_routes.HasField("scoped_rds"):
                _inline_scopes(hcm, routes, scoped)  # replaces the scoped_rds oneof
                network_filter.typed_config.CopyFrom(pack(hcm))
        if chain.HasField("transport_socket"):
            tls = tls_pb2.DownstreamTlsContext()
            if chain.transport_socket.typed_config.Unpack(tls):
                for sds in tls.common_tls_context.tls_certificate_sds_secret_configs:
                    sds.ClearField("sds_config")  # no sds_config: the static secret of that name
                chain.transport_socket.typed_config.CopyFrom(pack(tls))
    return listener


def _static_cluster(resource: EnvoyResource, endpoints: Mapping[str, EnvoyResource]) -> Any:
    cluster: Any = serialize.parse(resource)
    if cluster.type == cluster_pb2.Cluster.EDS:
        service = cluster.eds_cluster_config.service_name or cluster.name
        cluster.ClearField("eds_cluster_config")
        cluster.type = cluster_pb2.Cluster.STATIC
        if service in endpoints:
            cluster.load_assignment.CopyFrom(serialize.parse(endpoints[service]))
        else:
            cluster.load_assignment.cluster_name = service
    return cluster


def admin_cluster(port: int = ADMIN_PORT) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=names.ADMIN_CLUSTER, type=cluster_pb2.Cluster.STATIC)
    cluster.connect_timeout.seconds = 1
    cluster.load_assignment.cluster_name = names.ADMIN_CLUSTER
    address = cluster.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    address.address = "127.0.0.1"
    address.port_value = port
    return cluster


def static_bootstrap(resources: Mapping[str, Mapping[str, EnvoyResource]], *, admin_port: int = ADMIN_PORT) -> dict[str, Any]:
    """A bootstrap document (proto3 JSON mapping) serving `resources` statically."""
    bootstrap = bootstrap_pb2.Bootstrap()
    bootstrap.node.id = "modelroute-static"
    bootstrap.node.cluster = "modelroute"
    admin = bootstrap.admin.address.socket_address
    admin.address = "127.0.0.1"
    admin.port_value = admin_port
    static = bootstrap.static_resources
    routes = resources.get(ROUTE, {})
    endpoints = resources.get(ENDPOINT, {})
    for _, resource in sorted(resources.get(LISTENER, {}).items()):
        static.listeners.append(_static_listener(resource, routes, resources.get(SCOPED_ROUTE, {})))
    for _, resource in sorted(resources.get(CLUSTER, {}).items()):
        static.clusters.append(_static_cluster(resource, endpoints))
    if names.ADMIN_CLUSTER not in resources.get(CLUSTER, {}):
        static.clusters.append(admin_cluster(admin_port))
    for _, resource in sorted(resources.get(SECRET, {}).items()):
        static.secrets.append(serialize.parse(resource))
    return serialize.to_dict(bootstrap)
