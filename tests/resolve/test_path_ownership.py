"""A ModelRoute that takes over a path owned by a ModelServer: permission across
namespaces, and the owner's auth stays on the path (SPEC 3.2, 3.7)."""

from __future__ import annotations

from tests.resolve.build import cond, listener, mr, ms, route, route_names, run, secret, server, to
from tests.resolve.test_auth import api_key, jwt
from tests.resolve.test_conflicts import tls, tls_secret

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


# --- found in the security review (each test reproduced a hole before its fix) ---------


def test_a_shorter_claim_over_another_namespaces_server_needs_its_permission() -> None:
    """`spec.path: /v1` in namespace evil covers team-a's server at /v1/models/secret."""
    objs = [server("secret", "/v1/models/secret", namespace="team-a"),
            server("mine", "/evil", namespace="evil"),
            route("grab", {"path": "/v1", "routes": [to("mine")]}, namespace="evil")]
    res = run(objs)
    assert "modelroute/evil/grab/0" not in route_names(res, 8080)
    accepted = cond(res, mr("grab", "evil"), "Accepted")
    assert accepted.reason == "NetworkPolicyViolation" and "team-a/secret" in accepted.message


def test_a_claim_over_servers_below_it_carries_their_auth() -> None:
    objs = [server("secure", "/v1/models/secure", **jwt(jwksUri="https://auth.example/jwks")),
            server("open", "/open"),
            route("wide", {"path": "/v1", "routes": [to("open")]})]
    res = run(objs)
    (listener,) = res.gateway.listeners
    wide = next(r for r in listener.routes if r.name == "modelroute/default/wide/0")
    assert [p.name for p in wide.auth] == ["modelserver/default/secure"]


def test_a_route_that_would_need_two_api_key_sets_is_refused() -> None:
    objs = [server("a-cheap", "/a", **api_key(secretName="cheap")),
            server("b-premium", "/b", **api_key(secretName="premium")),
            secret("cheap", {"k": "cheap-key"}), secret("premium", {"k": "premium-key"}),
            route("mix", {"path": "/v1/premium", "routes": [to("a-cheap", weight=50), to("b-premium", weight=50)]})]
    res = run(objs)
    assert "modelroute/default/mix/0" not in route_names(res, 8080)
    accepted = cond(res, mr("mix"), "Accepted")
    assert accepted.reason == "ValidationFailed" and "a request carries one key" in accepted.message
    # the servers' own routes keep their own keys
    assert {r.name for r in listener(res, 8080).routes} >= {"modelserver/default/a-cheap", "modelserver/default/b-premium"}


def test_a_tls_server_is_never_reached_through_a_plain_port() -> None:
    objs = [server("secure", "/secure", 8443, **tls("cert")), tls_secret("cert"),
            server("plain", "/plain", 8080),
            route("leak", {"routes": [to("secure")], "fallback": {"modelServerRef": {"name": "plain"}}})]
    res = run(objs)
    assert not any(r.owner == mr("leak") for l in res.gateway.listeners for r in l.routes)
    accepted = cond(res, mr("leak"), "Accepted")
    assert accepted.reason == "NetworkPolicyViolation" and "requires TLS" in accepted.message


def test_jwks_that_envoy_would_refuse_fails_the_server_closed() -> None:
    """An unusable key set must fail the server itself, so its path is never left to a
    shorter server that would then receive its traffic unauthenticated."""
    objs = [server("secret", "/v1/models/secret", **jwt(jwksSecretName="jwks")),
            secret("jwks", {"jwks": '{"keys": [{"kty": "RSA"}]}'}),
            server("public", "/v1")]
    res = run(objs)
    assert res.statuses[ms("secret")].phase == "Failed"
    assert "has no key Envoy can use" in cond(res, ms("secret"), "Accepted").message
