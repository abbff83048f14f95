"""HTTPS listeners (SPEC 3.1 `tls`): a `DownstreamTlsContext` whose certificate comes by
SDS over ADS, and the SDS Secret itself (`secret.py`).

Referencing the certificate by name means a rotated Secret updates one SDS resource and
Envoy swaps certificates without touching the listener or dropping connections.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from routing_engine import ir
from routing_engine.api.resources import ObjectKey
from routing_engine.translate.plugin import RANKS, ExtraResource, Plugin
from routing_engine.translate.secret import tls_secret
from routing_engine.translate.xds import SECRET, ads, pack

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"


def downstream_tls(certificate: ir.TlsCertificate) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    sds = context.common_tls_context.tls_certificate_sds_secret_configs.add(name=certificate.name)
    sds.sds_config.CopyFrom(ads())
    context.common_tls_context.alpn_protocols.extend(["h2", "http/1.1"])
    return context


class TlsPlugin(Plugin):
    name = "tls"
    rank = RANKS["tls"]

    def listener_facet(self, route: ir.Route) -> None:
        return None  # the listener's own certificate only

    def patch_listener(self, listener: ir.Listener, proto: listener_pb2.Listener) -> None:
        if listener.tls is None:
            return
        for chain in proto.filter_chains:
            chain.transport_socket.name = TLS_TRANSPORT_SOCKET
            chain.transport_socket.typed_config.CopyFrom(pack(downstream_tls(listener.tls)))

    def extra_resources(self, gateway: ir.Gateway) -> Iterable[ExtraResource]:
        certificates: dict[str, tuple[ir.TlsCertificate, set[ObjectKey]]] = {}
        for listener in gateway.listeners:
            if listener.tls is not None:
                entry = certificates.setdefault(listener.tls.name, (listener.tls, set()))
                entry[1].update(route.owner for route in listener.routes)
        for name in sorted(certificates):
            certificate, owners = certificates[name]
            yield ExtraResource(SECRET, name, tls_secret(certificate), tuple(sorted(owners)))
