"""xDS resource type URLs, derived from the Envoy protos (never written by hand): one
vocabulary for the engine, which makes the resources, and the xDS server, which serves
them (neither may import the other)."""

from __future__ import annotations

from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2


def type_url(message: type[Message]) -> str:
    """The type URL of a proto message class, as `Any.Pack` writes it."""
    return "type.googleapis.com/" + message.DESCRIPTOR.full_name


LISTENER = type_url(listener_pb2.Listener)
ROUTE = type_url(route_pb2.RouteConfiguration)
SCOPED_ROUTE = type_url(scoped_route_pb2.ScopedRouteConfiguration)
CLUSTER = type_url(cluster_pb2.Cluster)
ENDPOINT = type_url(endpoint_pb2.ClusterLoadAssignment)
SECRET = type_url(secret_pb2.Secret)

# Make-before-break order (xDS protocol, "Eventual consistency considerations"): clusters
# exist before their endpoints, both before the listeners and routes that point at them;
# a routing scope names the route table it selects, so scopes go before tables.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET)
