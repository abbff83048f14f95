"""A plugin written the way a third party would (against `routing_engine.plugins` only),
for the tests of the extension point and the golden case `extension-request-headers`.

`spec.extensions.requestHeaders` of a ModelServer: headers Envoy adds to every request
it sends to that server's model (`add`, name → value), e.g. a tier for the engine's
scheduler. A route reaching several servers that set it adds the headers of each, a
header set by two servers taking the value of the first by namespace/name."""

from __future__ import annotations

from pydantic import Field, field_validator

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from routing_engine.plugins import ExtensionSpec, Plugin, ir

class RequestHeadersSpec(ExtensionSpec):
    add: dict[str, str] = Field(min_length=1, description="Header name (lower case) → value")

    @field_validator("add")
    @classmethod
    def _names(cls, add: dict[str, str]) -> dict[str, str]:
        for name in add:
            if not name or not all(c.isdigit() or c == "-" or "a" <= c <= "z" for c in name):
                raise ValueError(f'header name "{name}" must be lower case letters, digits and "-"')
        return add


class RequestHeadersPlugin(Plugin):
    name = "requestHeaders"
    rank = 450  # adds no HTTP filter (route-level headers)
    extension = RequestHeadersSpec

    def listener_facet(self, route: ir.Route) -> None:
        return None  # reads nothing of routes at listener level

    def patch_route(self, route: ir.Route, proto: route_components_pb2.Route) -> None:
        headers: dict[str, str] = {}
        for found in route.extension(self.name):
            spec: RequestHeadersSpec = found.value
            for name, value in sorted(spec.add.items()):
                headers.setdefault(name, value)
        for name, value in sorted(headers.items()):
            proto.request_headers_to_add.add(
                header=base_pb2.HeaderValue(key=name, value=value),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


class Exploding(Plugin):
    """Owns `spec.extensions.exploding`, whose model's validator fails its own way."""

    name = "exploding"
    rank = 460

    class Spec(ExtensionSpec):
        level: int = 0

        @field_validator("level")
        @classmethod
        def _boom(cls, level: int) -> int:
            if level > 1:
                raise ZeroDivisionError("a bug in the plugin")  # not a ValueError: pydantic lets it through
            return level

    extension = Spec
