"""Serialized xDS resources → readable documents (YAML/JSON-ready dicts).

The engine's output is bytes (what the xDS server sends); people, golden tests and
`modelroute compile` read them as the proto3 JSON mapping with proto field names
(snake_case), which is also what Envoy accepts in a YAML bootstrap. Importing this
module imports every proto type the built-in plugins pack into `Any`, so they print.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as _aggregate  # noqa: F401  (Any types)
from envoy.extensions.filters.http.api_key_auth.v3 import api_key_auth_pb2 as _apikey  # noqa: F401
from envoy.extensions.filters.http.health_check.v3 import health_check_pb2 as _health  # noqa: F401
from envoy.extensions.filters.http.json_to_metadata.v3 import json_to_metadata_pb2 as _j2m  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as _jwt  # noqa: F401
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as _lrl  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2 as _router  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2 as _previous  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2 as _hcm,
)
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2 as _early  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2 as _tls  # noqa: F401
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET
from routing_engine.world import EnvoyResource

MESSAGE_TYPES: Mapping[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    SCOPED_ROUTE: scoped_route_pb2.ScopedRouteConfiguration,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    SECRET: secret_pb2.Secret,
}

# Golden-file and CLI section names per resource type.
SECTION_NAMES: Mapping[str, str] = {
    LISTENER: "listeners",
    SCOPED_ROUTE: "scopes",
    ROUTE: "routes",
    CLUSTER: "clusters",
    ENDPOINT: "endpoints",
    SECRET: "secrets",
}


def parse(resource: EnvoyResource) -> Message:
    message = MESSAGE_TYPES[resource.type_url]()
    message.ParseFromString(resource.body)
    return message


def _plain(value: Any) -> Any:
    """Plain dicts with sorted keys: json_format returns OrderedDicts for `Any` fields, and
    iterates proto maps in an order that changes between processes (upb's hash seed), so
    without sorting the same bytes would print differently from run to run."""
    if isinstance(value, dict):
        return {k: _plain(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_dict(message: Message) -> dict[str, Any]:
    return _plain(json_format.MessageToDict(message, preserving_proto_field_name=True))  # type: ignore[no-any-return]


def sections(resources: Mapping[str, Mapping[str, EnvoyResource]]) -> dict[str, list[dict[str, Any]]]:
    """`{"listeners": [...], "routes": [...], ...}` in name order, every section present."""
    return {
        SECTION_NAMES[type_url]: [to_dict(parse(r)) for _, r in sorted(resources.get(type_url, {}).items())]
        for type_url in SECTION_NAMES
    }
