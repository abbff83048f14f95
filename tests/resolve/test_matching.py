"""Normal forms of paths and matches, and the resource names they end up under."""

from __future__ import annotations

import pytest

from routing_engine import ir, names
from routing_engine.api.resources import ObjectKey
from routing_engine.api.resources import RouteMatch
from routing_engine.resolve.matching import is_under, path_match, prefix_path, route_match


@pytest.mark.parametrize(("written", "expected"), [
    ("/a/b", ir.PathMatch("exact", "/a/b")),
    ("/a/b/", ir.PathMatch("exact", "/a/b/")),
    ("/a/b/*", ir.PathMatch("segment_prefix", "/a/b")),
    ("/*", ir.PathMatch("segment_prefix", "/")),
    ("/a/*/c", ir.PathMatch("glob", "/a/*/c")),
    ("/a/b*", ir.PathMatch("glob", "/a/b*")),
    ("/a/*/*", ir.PathMatch("glob", "/a/*/*")),
])
def test_match_path_forms(written: str, expected: ir.PathMatch) -> None:
    assert path_match(written) == expected


def test_a_host_header_is_matched_as_the_authority() -> None:
    match = route_match(RouteMatch.model_validate({"headers": {"Host": "a.example", "X-Tier": "gold"}}), "/v1")
    assert [name for name, _ in match.headers] == [":authority", "x-tier"]


def test_prefix_normal_form_and_segment_containment() -> None:
    assert [prefix_path(p) for p in ("/", "/a/", "/a")] == ["/", "/a", "/a"]
    assert is_under("/a", "/a") and is_under("/a/b", "/a") and is_under("/anything", "/")
    assert not is_under("/ab", "/a") and not is_under("/a", "/a/b")


def test_names_say_where_a_resource_came_from() -> None:
    server, route = ObjectKey("ModelServer", "ns", "s"), ObjectKey("ModelRoute", "ns", "r")
    assert names.backend(server) == "modelserver/ns/s"
    assert names.server_route(server) == "modelserver/ns/s"
    assert names.auth_policy(server) == "modelserver/ns/s"
    assert names.listener(10080) == "listener/10080"
    assert names.group_route(route, 2) == "modelroute/ns/r/2"
    assert names.fallback_route(route) == "modelroute/ns/r/fallback"
    assert names.tls_certificate("ns", "cert") == "secret/ns/cert"
