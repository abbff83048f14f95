"""`GET <base>/models`: where the listing goes, what it names, and that a caller is shown
only models it could reach (the listing carries the models' own auth when they share it)."""

from __future__ import annotations

import json

from routing_engine import ir
from routing_engine.translate.apikey import API_KEY_FILTER
from routing_engine.translate.jwt import JWT_FILTER
from routing_engine.translate.models_list import ModelsListPlugin
from tests.translate.builders import JWKS, route

JWT = ir.JwtProvider(name="modelserver/default/secure", issuer="https://issuer", jwks_inline=JWKS)
KEYS = ir.ApiKeyAuth(name="modelserver/default/keyed", header="x-api-key", keys=("k",))


def model_route(name: str, model: str, path: str = "/v1", kind: str = "segment_prefix",
                auth: tuple[ir.AuthPolicy, ...] = ()) -> ir.Route:
    match = ir.RouteMatch(path=ir.PathMatch(kind, path), model=model)  # type: ignore[arg-type]
    return route(name, "a", match=match, auth=auth)


def listings(*routes: ir.Route) -> dict[str, tuple[list[str], set[str]]]:
    """Listing path → (model ids, per-route filters) of a listener with `routes`."""
    listener = ir.Listener(name="l", address="0.0.0.0", port=8080, routes=routes)
    out = {}
    for proto in ModelsListPlugin().extra_routes(listener):
        assert [h.string_match.exact for h in proto.match.headers if h.name == ":method"] == ["GET"]
        body = json.loads(proto.direct_response.body.inline_string)
        out[proto.match.path] = ([m["id"] for m in body["data"]], set(proto.typed_per_filter_config))
    return out


def test_listing_paths_follow_where_the_model_routes_take_requests() -> None:
    assert listings(model_route("r0", "m1"), model_route("r1", "m2", path="/v1/chat/completions"),
                    model_route("r2", "m3", path="/openai/v1/completions", kind="exact"),
                    model_route("r3", "m4", path="/"), model_route("r4", "m5", path="/x/*/y", kind="glob")) == {
        "/v1/models": (["m1", "m2", "m4"], set()), "/openai/v1/models": (["m3"], set())}
    assert listings(route("plain", "a")) == {}  # no model match on the listener: nothing added


def test_models_sharing_their_credentials_are_listed_behind_them() -> None:
    assert listings(model_route("r0", "m1", auth=(JWT,)), model_route("r1", "m2", auth=(JWT,))) == {
        "/v1/models": (["m1", "m2"], {JWT_FILTER})}
    assert listings(model_route("r0", "m1", auth=(KEYS,))) == {"/v1/models": (["m1"], {API_KEY_FILTER})}


def test_with_mixed_credentials_only_models_anyone_can_reach_are_named() -> None:
    assert listings(model_route("r0", "open"), model_route("r1", "secret", auth=(JWT,)),
                    model_route("r2", "keyed", auth=(KEYS,))) == {"/v1/models": (["open"], set())}
