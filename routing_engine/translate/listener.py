"""IR listeners → Envoy Listeners: one per port, one filter chain with an
HttpConnectionManager whose routes come by RDS over ADS.

Routes are never inlined: a route edit then changes the listener's RouteConfiguration
only, and an LDS update (which drains connections) happens only when the listener's own
shape changes — its port, TLS certificate name, or the set of HTTP filters. HTTP filters
come from the plugins in rank order, then the router. Paths are normalized and slashes
merged before matching so `/v1//models/../a` cannot sneak past a path match. The port
is stripped from the Host (`:authority`) before anything reads it, as Envoy Gateway's
listeners do, so a `host` header match names the host alone whatever port a client
puts in it (curl sends `Host: name:8080` to a port other than 80).

Fail closed by construction (SPEC 3.8): the RouteConfiguration is named after the
listener's own content (`names.route_config`), so a route table only ever reaches the
listener it was compiled for. A listener with many routes gets scoped tables instead
(translate/scopes.py): its scopes' keys and names, and its tables' names, carry the same
content tag. Routes that need a filter (auth, rate limit) can then never
be served by a listener without it: not when Envoy rejects the new listener (it keeps the
old one, which keeps asking for the old table), and not on connections the old listener
still drains. A listener change renames its table; a route edit does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from routing_engine import ir
from routing_engine import names
from routing_engine.translate import scopes
from routing_engine.translate.plugin import Plugin
from routing_engine.translate.xds import ads, pack, serialize

HCM_FILTER = "envoy.filters.network.http_connection_manager"
# Envoy shares one scope subscription among all listeners (every connection manager gets
# every scope); the listener tag in each scope's key keeps them apart.
SCOPES_NAME = "modelroute"
ROUTER_FILTER = "envoy.filters.http.router"


def http_connection_manager(listener: ir.Listener, plugins: Sequence[Plugin]) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=listener.name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
    )
    hcm.normalize_path.value = True
    hcm.merge_slashes = True
    hcm.strip_any_host_port = True
    hcm.rds.config_source.CopyFrom(ads())  # route_config_name: set by build_listener
    for plugin in plugins:
        hcm.http_filters.extend(plugin.http_filters(listener))
    hcm.http_filters.add(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))
    for plugin in plugins:
        plugin.patch_hcm(listener, hcm)
    return hcm


def build_listener(listener: ir.Listener, plugins: Sequence[Plugin], *, scope_depth: int = 0
                   ) -> tuple[listener_pb2.Listener, str]:
    """The Listener and its tag. Its HCM's `rds.route_config_name` (or, with
    `scope_depth`, its routing scopes' key tag) is derived from everything else in it
    (plugins edit the HCM in `patch_hcm`, never in `patch_listener`)."""
    proto = listener_pb2.Listener(name=listener.name)
    socket = proto.address.socket_address
    socket.address = listener.address
    socket.port_value = listener.port
    chain = proto.filter_chains.add()
    hcm = http_connection_manager(listener, plugins)
    if scope_depth:
        scopes.patch_hcm(hcm, name=SCOPES_NAME, depth=scope_depth, tag="")
    network_filter = chain.filters.add(name=HCM_FILTER, typed_config=pack(hcm))
    for plugin in plugins:
        plugin.patch_listener(listener, proto)
    tag = names.listener_tag(serialize(proto))
    if scope_depth:
        scopes.patch_hcm(hcm, name=SCOPES_NAME, depth=scope_depth, tag=tag)
    else:
        hcm.rds.route_config_name = names.route_config(listener, tag)
    network_filter.typed_config.CopyFrom(pack(hcm))
    return proto, tag


def route_config_name(proto: listener_pb2.Listener) -> str:
    """The RouteConfiguration a built (unscoped) Listener asks for."""
    hcm = hcm_pb2.HttpConnectionManager()
    for chain in proto.filter_chains:
        for network_filter in chain.filters:
            if network_filter.name == HCM_FILTER and network_filter.typed_config.Unpack(hcm):
                name: str = hcm.rds.route_config_name
                return name
    raise ValueError(f"listener {proto.name!r} has no HttpConnectionManager")
