"""Auth material (JWT, API keys), fail-closed Secrets, the auth union on routes, and
rate limits per listener."""

from __future__ import annotations

from typing import Any

import json

from routing_engine import ir
from routing_engine.api.resources import ModelServer, Resource
from tests.resolve.build import cond, ir_route, listener, mr, ms, route, route_names, run, secret, server, to
from tests.translate.builders import JWKS as BUILDERS_JWKS

JWKS = BUILDERS_JWKS


def jwt(**config: Any) -> dict[str, Any]:
    return {"authentication": {"enabled": True, "type": "jwt", "config": {"issuer": "https://auth.example", **config}}}


def api_key(**config: Any) -> dict[str, Any]:
    return {"authentication": {"enabled": True, "type": "apiKey", "config": {"secretName": "keys", **config}}}


def unvalidated(obj: Resource, **config: Any) -> Resource:
    """`obj` with `config` added to its authentication config, past the API model's checks
    (`model_copy` does not validate). The model refuses such configs (tests/api); resolve
    checks them again so that one that got through anyway fails closed, never raises."""
    assert isinstance(obj, ModelServer) and obj.spec.authentication is not None
    auth = obj.spec.authentication.model_copy(update={"config": {**obj.spec.authentication.config, **config}})
    return obj.model_copy(update={"spec": obj.spec.model_copy(update={"authentication": auth})})


def test_jwt_provider_with_remote_jwks_and_audiences() -> None:
    res = run([server("a", "/a", **jwt(jwksUri="https://auth.example/jwks", audience="api", audiences=["web", "api"]))])
    (policy,) = ir_route(res, "modelserver/default/a").auth
    assert policy == ir.JwtProvider(name="modelserver/default/a", issuer="https://auth.example",
                                    audiences=("api", "web"), jwks_uri="https://auth.example/jwks")


def test_jwt_keys_from_secret() -> None:
    res = run([server("a", "/a", **jwt(jwksSecretName="jwks")), secret("jwks", {"jwks": JWKS})])
    (policy,) = ir_route(res, "modelserver/default/a").auth
    assert isinstance(policy, ir.JwtProvider) and policy.jwks_inline == JWKS and policy.jwks_uri is None


def test_missing_jwks_secret_never_serves_unauthenticated() -> None:
    res = run([server("a", "/a", **jwt(jwksSecretName="absent"))])
    assert res.gateway.listeners == () and res.gateway.backends == ()
    assert res.statuses[ms("a")].phase == "Failed"
    accepted = cond(res, ms("a"), "Accepted")
    assert accepted.reason == "ModelNotFound"
    assert "spec.authentication.config.jwksSecretName: Secret default/absent not found" in accepted.message


def test_jwks_secret_that_is_not_a_jwks_document_fails_validation() -> None:
    res = run([server("a", "/a", **jwt(jwksSecretName="jwks")), secret("jwks", {"jwks": "not json"})])
    assert res.gateway.listeners == ()
    assert cond(res, ms("a"), "Accepted").reason == "ValidationFailed"


def test_bad_audiences_value_fails_validation_alone() -> None:
    res = run([unvalidated(server("a", "/a", **jwt(jwksUri="https://auth.example/jwks")), audiences="api"),
               server("b", "/b")])
    assert route_names(res, 8080) == ["modelserver/default/b"]
    accepted = cond(res, ms("a"), "Accepted")
    assert (accepted.reason, "spec.authentication.config.audiences" in accepted.message) == ("ValidationFailed", True)


def test_api_key_every_secret_value_is_a_key_header_default_and_custom() -> None:
    res = run([server("a", "/a", **api_key()), server("b", "/b", **api_key(header="X-Team-Key")),
               secret("keys", {"alice": "k-alice\n", "bob": "k-bob"})])
    (default,) = ir_route(res, "modelserver/default/a").auth
    assert default == ir.ApiKeyAuth(name="modelserver/default/a", header="x-api-key", keys=("k-alice", "k-bob"))
    (custom,) = ir_route(res, "modelserver/default/b").auth
    assert isinstance(custom, ir.ApiKeyAuth) and custom.header == "x-team-key"
    assert "k-alice" not in repr(custom)


def test_api_key_secret_missing_or_empty_fails_the_server() -> None:
    missing = run([server("a", "/a", **api_key())])
    assert cond(missing, ms("a"), "ResolvedRefs").message.endswith("spec.authentication.config.secretName: Secret default/keys not found")
    empty = run([server("a", "/a", **api_key()), secret("keys", {})])
    assert empty.gateway.backends == ()
    assert "holds no API keys" in cond(empty, ms("a"), "Accepted").message


def test_route_carries_the_union_of_its_servers_auth_sorted() -> None:
    res = run([
        server("z", "/z", **jwt(jwksUri="https://auth.example/jwks")),
        server("k", "/k", **api_key()), secret("keys", {"one": "1"}),
        server("open", "/open"),
        route("r", {"path": "/chat", "routes": [to("z", weight=50), to("open", weight=50)],
                    "fallback": {"modelServerRef": {"name": "k"}}}),
        route("plain", {"path": "/plain", "routes": [to("open")]}),
    ])
    group = ir_route(res, "modelroute/default/r/0")
    assert [p.name for p in group.auth] == ["modelserver/default/k", "modelserver/default/z"]
    assert [p.name for p in ir_route(res, "modelroute/default/r/fallback").auth] == ["modelserver/default/k"]
    assert ir_route(res, "modelroute/default/plain/0").auth == ()


def test_rate_limits_of_servers_reachable_through_each_listener() -> None:
    limited: dict[str, Any] = {"rateLimit": {"enabled": True, "requestsPerSecond": 5}}
    res = run([
        server("a", "/a", 8080, **limited),
        server("b", "/b", 9090, rateLimit={"enabled": True, "requestsPerSecond": 10, "burstSize": 30, "global": True}),
        server("c", "/c", 9090),
        server("off", "/off", 9090, rateLimit={"enabled": False, "requestsPerSecond": 10}),
        route("r", {"path": "/c/x", "routes": [to("a")], "fallback": {"modelServerRef": {"name": "b"}}}),
    ])
    assert listener(res, 8080).rate_limits == (("modelserver/default/a", ir.RateLimit(5, 5)),)
    # 9090 reaches b by its own route and a through the ModelRoute owned by c.
    assert listener(res, 9090).rate_limits == (
        ("modelserver/default/a", ir.RateLimit(5, 5)),
        ("modelserver/default/b", ir.RateLimit(10, 30, shared=True)),
    )
    assert cond(res, mr("r"), "Accepted").status == "True"


def test_shared_limits_name_every_cluster_that_draws_from_a_servers_shared_limit() -> None:
    """The rate-limit service's table: a server's own cluster and every failover pair's
    from it (its descriptors name the pair's cluster), one row per cluster across listeners;
    local limits are not in it."""
    shared = {"enabled": True, "requestsPerSecond": 10, "global": True, "inputTokensPerUnit": 100}
    res = run([
        server("a", "/a", 8080, rateLimit={"enabled": True, "requestsPerSecond": 5}),
        server("b", "/b", 9090, rateLimit=shared),
        server("c", "/c", 9090),
        server("d", "/d", 8080),
        route("r", {"path": "/c/x", "routes": [to("b"), to("a")], "fallback": {"modelServerRef": {"name": "c"}}}),
        route("s", {"path": "/d/x", "routes": [to("b")]}),
    ])
    limit = ir.RateLimit(10, 10, shared=True, input_tokens=100)
    assert res.gateway.shared_limits == (
        ir.SharedLimit("failover/modelserver/default/b/modelserver/default/c", ms("b"), limit),
        ir.SharedLimit("modelserver/default/b", ms("b"), limit),
    )
    assert run([server("a", "/a", rateLimit={"enabled": True, "requestsPerSecond": 5})]).gateway.shared_limits == ()


def test_api_key_value_that_is_not_utf8_fails_closed() -> None:
    from routing_engine.api.resources import KIND_BY_NAME

    bad = KIND_BY_NAME["Secret"].model_validate(  # "/w==" is the single byte 0xff
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "data": {"k": "/w=="}})
    res = run([server("a", "/a", **api_key()), bad])
    assert res.gateway.backends == ()
    assert "key k is not a usable API key" in cond(res, ms("a"), "ResolvedRefs").message


def test_api_key_header_that_is_not_a_header_name_fails_alone() -> None:
    res = run([unvalidated(server("a", "/a", **api_key()), header=5),
               unvalidated(server("b", "/b", **api_key()), header="two words"), server("c", "/c"),
               secret("keys", {"k": "v"})])
    assert route_names(res, 8080) == ["modelserver/default/c"]
    for name in ("a", "b"):
        accepted = cond(res, ms(name), "Accepted")
        assert accepted.reason == "ValidationFailed"
        assert "spec.authentication.config.header" in accepted.message


def test_jwks_secret_with_absurdly_nested_json_fails_closed() -> None:
    res = run([server("a", "/a", **jwt(jwksSecretName="jwks")), secret("jwks", {"jwks": "[" * 100_000})])
    assert res.gateway.backends == ()
    assert cond(res, ms("a"), "Accepted").reason == "ValidationFailed"
