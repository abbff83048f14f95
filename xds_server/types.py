"""The vocabulary shared by the cache and the protocol layer.

`XdsResource` is a structural type so that this package never imports the engine:
anything with these four attributes (the engine's `EnvoyResource`, a test double) can be
served.
"""

from __future__ import annotations

from typing import Protocol

from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2


def type_url(message: type[Message]) -> str:
    """The type URL of a proto message class (as `Any.Pack` writes it): derived from the
    protos, never written by hand."""
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

# Only these types have a wildcard subscription and state-of-the-world removal semantics;
# for the others a SotW response never removes anything (removal is by dropping references).
# Envoy subscribes to scoped routes (SRDS) by wildcard and replaces its whole scope set
# with each SotW response.
WILDCARD_TYPES: frozenset[str] = frozenset({LISTENER, CLUSTER, SCOPED_ROUTE})

WILDCARD = "*"

SHORT_NAMES: dict[str, str] = {LISTENER: "LDS", ROUTE: "RDS", SCOPED_ROUTE: "SRDS", CLUSTER: "CDS", ENDPOINT: "EDS",
                               SECRET: "SDS"}


def short_name(type_url: str) -> str:
    """`LDS` for the listener type URL; the proto name for any type we don't abbreviate."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def push_rank(type_url: str) -> tuple[int, str]:
    """Sort key putting known types in make-before-break order, unknown ones after, stably."""
    try:
        return (PUSH_ORDER.index(type_url), "")
    except ValueError:
        return (len(PUSH_ORDER), type_url)


class XdsResource(Protocol):
    """One named Envoy resource, already serialized.

    `version` must be a hash of the content: equal bytes, equal version, so a restarted
    server hands Envoy the very same versions and nothing churns.
    """

    @property
    def type_url(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def version(self) -> str: ...
