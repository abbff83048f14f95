"""A ModelRoute that takes over a path owned by a ModelServer: permission across
namespaces, and the owner's auth stays on the path (SPEC 3.2, 3.7)."""

from __future__ import annotations

from tests.resolve.build import cond, mr, route, route_names, run, server, to
from tests.resolve.test_auth import jwt

ALLOW = {"networking.matrixinfer.ai/allow-from": "team"}


def test_front_door_owned_by_another_namespace_needs_its_permission() -> None:
    objs = [server("secure", "/v1/models/secure", namespace="prod"),
            server("mine", "/v1/models/mine", namespace="team"),
            route("grab", {"path": "/v1/models/secure", "routes": [to("mine")]}, namespace="team")]
    res = run(objs)
    assert "modelroute/team/grab/0" not in route_names(res, 8080)
    accepted = cond(res, mr("grab", "team"), "Accepted")
    assert accepted.reason == "NetworkPolicyViolation"
    assert "spec.path: /v1/models/secure belongs to ModelServer prod/secure" in accepted.message


def test_front_door_takeover_allowed_by_the_owner() -> None:
    objs = [server("secure", "/v1/models/secure", namespace="prod", annotations=ALLOW),
            server("mine", "/v1/models/mine", namespace="team"),
            route("grab", {"path": "/v1/models/secure", "routes": [to("mine")]}, namespace="team")]
    assert "modelroute/team/grab/0" in route_names(run(objs), 8080)


def test_match_path_into_another_namespace_needs_permission_too() -> None:
    objs = [server("secure", "/v1/models/secure", namespace="prod"),
            server("mine", "/v1/models/mine", namespace="team"),
            route("grab", {"routes": [to("mine", match={"path": "/v1/models/secure/*"})]}, namespace="team")]
    accepted = cond(run(objs), mr("grab", "team"), "Accepted")
    assert accepted.reason == "NetworkPolicyViolation"
    assert "spec.routes[0].match.path" in accepted.message


def test_owner_auth_applies_to_routes_under_its_path() -> None:
    """The owner requires a JWT; the route's destination does not. Requests under the
    owner's path still need the owner's token."""
    objs = [server("secure", "/v1/models/secure", **jwt(jwksUri="https://auth.example/jwks")),
            server("open", "/v1/models/open"),
            route("split", {"path": "/v1/models/secure", "routes": [to("open")]})]
    res = run(objs)
    (listener,) = res.gateway.listeners
    by_name = {r.name: r for r in listener.routes}
    assert [p.name for p in by_name["modelroute/default/split/0"].auth] == ["modelserver/default/secure"]
    assert by_name["modelserver/default/open"].auth == ()
