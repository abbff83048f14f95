"""Printing resources needs no hand-kept list of proto modules: the types of the `Any`s
present are imported from their packages (`routing_engine.serialize.load_types`).

Each check runs in a fresh interpreter, where only what `routing_engine.serialize`
imports itself is loaded (this test process has imported every filter's module long ago)."""

from __future__ import annotations

import json
import subprocess
import sys

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from routing_engine.translate.xds import LISTENER, ROUTE, pack
from tests.support import REPO

CORS_MODULE = "envoy.extensions.filters.http.cors.v3.cors_pb2"

_PRINT = """
import json, sys
from routing_engine import serialize
from routing_engine.world import EnvoyResource
before = {module!r} in sys.modules
resource = EnvoyResource({type_url!r}, "r", bytes.fromhex(sys.stdin.read()), "v")
try:
    printed = serialize.to_dict(serialize.parse(resource))
except serialize.UnknownTypeError as err:
    printed = "UnknownTypeError: " + str(err)
print(json.dumps({{"loaded_before": before, "printed": printed}}))
"""


def _print_fresh(type_url: str, body: bytes) -> dict:
    code = _PRINT.format(module=CORS_MODULE, type_url=type_url)
    done = subprocess.run([sys.executable, "-c", code], input=body.hex(), capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _listener_with(typed_config: object) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="x")
    hcm.http_filters.add(name="envoy.filters.http.cors", typed_config=typed_config)
    listener = listener_pb2.Listener(name="l")
    listener.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager",
                                             typed_config=pack(hcm))
    return listener


def test_an_any_nested_in_an_any_prints_without_its_module_listed_anywhere() -> None:
    found = _print_fresh(LISTENER, _listener_with(pack(cors_pb2.Cors())).SerializeToString())
    assert found["loaded_before"] is False  # nothing imported it up front
    http_filter = found["printed"]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
    assert http_filter["typed_config"] == {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}


def test_a_per_route_config_in_a_map_prints() -> None:
    route = route_components_pb2.Route(name="r")
    route.match.prefix = "/"
    policy = cors_pb2.CorsPolicy(max_age="60")
    policy.allow_origin_string_match.add(exact="https://app.example")
    route.typed_per_filter_config["envoy.filters.http.cors"].CopyFrom(pack(policy))
    table = route_pb2.RouteConfiguration(name="t")
    table.virtual_hosts.add(name="v", domains=["*"]).routes.append(route)
    found = _print_fresh(ROUTE, table.SerializeToString())
    printed = found["printed"]["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert printed["allow_origin_string_match"] == [{"exact": "https://app.example"}] and printed["max_age"] == "60"


def test_a_type_no_installed_module_defines_is_a_clear_error() -> None:
    from google.protobuf import any_pb2

    unknown = any_pb2.Any(type_url="type.googleapis.com/example.plugins.v1.Nope", value=b"")
    found = _print_fresh(LISTENER, _listener_with(unknown).SerializeToString())
    assert found["printed"] == (
        "UnknownTypeError: cannot print the Any of type 'type.googleapis.com/example.plugins.v1.Nope': no installed "
        "Python module defines example.plugins.v1.Nope (is the package with its generated *_pb2 module installed?)")
