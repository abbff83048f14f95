"""Serialized xDS resources → readable documents (YAML/JSON-ready dicts).

The engine's output is bytes (what the xDS server sends); people, golden tests and
`modelroute compile` read them as the proto3 JSON mapping with proto field names
(snake_case), which is also what Envoy accepts in a YAML bootstrap.

Printing an `Any` (a filter's `typed_config`, a per-route config) needs its message type
in the protobuf descriptor pool, i.e. its generated module imported. Which modules that
is follows from the type URLs present, so nothing here lists them (a new filter, built in
or from a plugin, prints with no edit here): `load_types` walks a message for the type
URLs of its `Any`s and imports, for each one missing, the generated `*_pb2` modules of
the Python package its proto package names (protoc lays modules out by proto package:
`envoy.extensions.filters.http.cors.v3.Cors` is in `envoy/extensions/filters/http/cors/v3/`).
A type no installed module defines is an `UnknownTypeError` naming it. The walk costs
about what the conversion does, so `to_dict` walks only when the conversion met a type
it did not know.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from routing_engine.translate.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET
from routing_engine.world import EnvoyResource


class UnknownTypeError(ValueError):
    """An `Any` whose message type no installed Python module defines."""


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
    try:
        converted = json_format.MessageToDict(message, preserving_proto_field_name=True)
    except TypeError:  # an `Any` of a type not imported yet (or of none installed: then say which)
        if not load_types(message):
            raise
        converted = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return _plain(converted)  # type: ignore[no-any-return]


def load_types(message: Message) -> int:
    """Import the modules defining the types of every `Any` inside `message` (nested ones
    too); returns how many types were missing. Raises `UnknownTypeError` for a type no
    installed module defines."""
    loaded = 0
    for packed in _anys(message):
        name = packed.TypeName()
        if not _known(name):
            _import_type(name, packed.type_url)
            loaded += 1
    return loaded


def _anys(message: Message) -> Iterator[any_pb2.Any]:
    """Every `Any` in `message`, depth first, each one's own content included."""
    if isinstance(message, any_pb2.Any):
        yield message
        name = message.TypeName()
        if name and _known(name):
            inner = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))()
            inner.ParseFromString(message.value)
            yield from _anys(inner)
        return
    for field, value in message.ListFields():
        entry = field.message_type
        if field.type != FieldDescriptor.TYPE_MESSAGE or entry is None:
            continue
        if entry.GetOptions().map_entry:
            if entry.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for item in value.values():
                    yield from _anys(item)
        elif field.is_repeated:
            for item in value:
                yield from _anys(item)
        else:
            yield from _anys(value)


def _known(name: str) -> bool:
    try:
        descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return False
    return True


def _import_type(name: str, type_url: str) -> None:
    """Import the generated modules of the package `name` is declared in (the longest
    importable prefix: a nested message's outer names are not packages) until the pool
    knows `name`."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        package = ".".join(parts[:cut])
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        for info in sorted(pkgutil.iter_modules(getattr(module, "__path__", ())), key=lambda i: i.name):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")
                if _known(name):
                    return
        break
    raise UnknownTypeError(f"cannot print the Any of type {type_url!r}: no installed Python module defines "
                           f"{name} (is the package with its generated *_pb2 module installed?)")


def sections(resources: Mapping[str, Mapping[str, EnvoyResource]]) -> dict[str, list[dict[str, Any]]]:
    """`{"listeners": [...], "routes": [...], ...}` in name order, every section present."""
    return {
        SECTION_NAMES[type_url]: [to_dict(parse(r)) for _, r in sorted(resources.get(type_url, {}).items())]
        for type_url in SECTION_NAMES
    }
