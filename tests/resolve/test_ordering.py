"""Route order on a listener: ModelRoutes (longer front door, older, name), then servers
(longer path, name)."""

from __future__ import annotations

from tests.resolve.build import route, route_names, run, server, to


def test_modelroutes_before_servers_longer_front_door_first_then_older_then_name() -> None:
    res = run([
        server("s", "/v1"), server("long", "/v1/models/long"), server("b", "/v1/b"),
        route("short", {"path": "/v1", "routes": [to("s")]}),
        route("deep", {"path": "/v1/models/x", "routes": [to("s")]}),
        route("young", {"path": "/v1/aa", "routes": [to("s")]}, created="2024-03-01T00:00:00Z"),
        route("old", {"path": "/v1/bb", "routes": [to("s")]}, created="2024-01-01T00:00:00Z"),
        route("z-none", {"path": "/v1/cc", "routes": [to("s")]}),
        route("a-none", {"path": "/v1/dd", "routes": [to("s")]}),
    ])
    assert route_names(res, 8080) == [
        "modelroute/default/deep/0",
        "modelroute/default/old/0",
        "modelroute/default/young/0",
        "modelroute/default/a-none/0",
        "modelroute/default/z-none/0",
        "modelroute/default/short/0",
        "modelserver/default/long",
        "modelserver/default/b",
        "modelserver/default/s",
    ]


def test_groups_keep_written_order_and_fallback_follows_them() -> None:
    res = run([server("a", "/a"), server("b", "/b"), route("r", {"routes": [
        to("a", match={"model": "z"}), to("b", match={"model": "a"}), to("a", match={"headers": {"x": "1"}}),
    ], "fallback": {"modelServerRef": {"name": "a"}}})])
    assert route_names(res, 8080)[:4] == [
        "modelroute/default/r/0", "modelroute/default/r/1", "modelroute/default/r/2", "modelroute/default/r/fallback",
    ]


def test_servers_with_equal_path_length_sort_by_namespace_then_name() -> None:
    res = run([server("b", "/bb", namespace="x"), server("a", "/aa", namespace="y"), server("c", "/cc", namespace="x")])
    assert route_names(res, 8080) == ["modelserver/x/b", "modelserver/x/c", "modelserver/y/a"]
