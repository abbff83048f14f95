"""The gateway's readiness listener: pushed by the control plane, probed by the kubelet.

A gateway pod must not receive traffic before Envoy has its configuration, and Envoy's
own admin (`/ready`) says LIVE as soon as the process is up, before anything came over
xDS. So the control plane adds one more listener to every gateway snapshot, on
`Placement.readiness_port`, answering `200 ready` to any request; the Deployment's
readinessProbe hits that port. The listener exists only once Envoy has received an LDS
response; like the engine's listeners it takes its routes by RDS, and Envoy activates a
listener only when its RouteConfiguration has arrived, which comes in the same RDS
response as every other listener's routes: Ready means the routes are in place too.

It is not compiled from manifests: it depends on how the gateway is deployed (its
probe's port), so the control loop adds it beside each gateway compile. It is built here,
with the engine's proto helpers, because the engine is where Envoy protos are made; the
port is reserved (`Target.reserved_ports`), so no ModelServer can ask for it.
"""

from __future__ import annotations

import hashlib

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from routing_engine.translate.xds import LISTENER, ROUTE, ads, pack, serialize
from routing_engine.world import EnvoyResource

NAME = "modelroute/readiness"


def _resource(type_url: str, body: bytes) -> EnvoyResource:
    return EnvoyResource(type_url=type_url, name=NAME, body=body, version=hashlib.sha256(body).hexdigest()[:16])


def readiness_resources(address: str, port: int) -> tuple[EnvoyResource, EnvoyResource]:
    """The Listener on `address:port` and its RouteConfiguration."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="modelroute_readiness", codec_type=hcm_pb2.HttpConnectionManager.AUTO)
    hcm.rds.route_config_name = NAME
    hcm.rds.config_source.CopyFrom(ads())
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))
    listener = listener_pb2.Listener(name=NAME)
    listener.address.socket_address.address = address
    listener.address.socket_address.port_value = port
    listener.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm))
    routes = route_pb2.RouteConfiguration(name=NAME)
    host = routes.virtual_hosts.add(name="readiness", domains=["*"])
    route = host.routes.add()
    route.match.prefix = "/"
    route.direct_response.status = 200
    route.direct_response.body.inline_string = "ready\n"
    return _resource(LISTENER, serialize(listener)), _resource(ROUTE, serialize(routes))
