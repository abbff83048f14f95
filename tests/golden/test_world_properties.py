"""Property test from manifests: random worlds of ModelServers and ModelRoutes (ports,
paths, matches, weights, fallbacks, canaries, rate limits, JWT, API keys, TLS, replicas)
go through resolve + translate; Envoy accepts the result, compiling is deterministic,
every reference resolves, and every split keeps the proportions of its weights.

Envoy runs on a few examples only (~0.5 s each); the structural checks on more.
"""

from __future__ import annotations

import base64
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelroute.envoy_check import validate
from routing_engine import engine, serialize
from routing_engine.api.resources import KIND_BY_NAME, ObjectKey
from routing_engine.incremental import Translator
from tests.support.references import dangling_references
from routing_engine.translate.xds import ROUTE
from routing_engine.world import BackendEndpoint, Target, World
from tests.translate.builders import JWKS, TLS_CERT, TLS_KEY
from tests.translate.builders import table_name

NETWORKING = "networking.matrixinfer.ai/v1alpha1"
SERVERS = [f"s{i}" for i in range(5)]
SEGMENT = st.sampled_from(["v1", "models", "llama", "chat", "a"])
MATCH_VALUE = st.one_of(st.sampled_from(["gold", "v2"]), st.builds(dict, prefix=st.just("g")), st.builds(dict, present=st.just(True)))

SECRETS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jwks"}, "stringData": {"jwks": JWKS}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": {"a": "key-a", "b": "key-b"}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cert"}, "type": "kubernetes.io/tls",
     "data": {"tls.crt": base64.b64encode(TLS_CERT).decode(), "tls.key": base64.b64encode(TLS_KEY).decode()}},
]


def path(segments: list[str]) -> str:
    return "/" + "/".join(segments)


@st.composite
def servers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "modelInferRef": {"name": name},
        "service": {"port": draw(st.sampled_from([8080, 8081, 443]))},
        "routing": {"path": path([*draw(st.lists(SEGMENT, min_size=1, max_size=2)), name]),
                    "timeout": draw(st.sampled_from(["500ms", "30s", "2m"])), "retries": draw(st.integers(0, 3))},
    }
    if draw(st.booleans()):
        spec["rateLimit"] = {"enabled": True, "requestsPerSecond": draw(st.integers(1, 500)), "global": draw(st.booleans())}
    auth = draw(st.sampled_from([None, "jwt-uri", "jwt-secret", "apiKey"]))
    if auth == "jwt-uri":
        spec["authentication"] = {"enabled": True, "type": "jwt",
                                  "config": {"issuer": "https://iss", "jwksUri": "https://keys.example/jwks.json"}}
    elif auth == "jwt-secret":
        spec["authentication"] = {"enabled": True, "type": "jwt", "config": {"issuer": "https://iss", "jwksSecretName": "jwks"}}
    elif auth == "apiKey":
        spec["authentication"] = {"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}}
    if spec["service"]["port"] == 443:
        spec["tls"] = {"enabled": True, "secretName": "cert"}
    return {"apiVersion": NETWORKING, "kind": "ModelServer", "metadata": {"name": name}, "spec": spec}


@st.composite
def model_routes(draw: st.DrawFn, name: str) -> dict[str, Any]:
    rules = []
    for _ in range(draw(st.integers(1, 4))):
        match: dict[str, Any] = {}
        if draw(st.booleans()):
            match["headers"] = draw(st.dictionaries(st.sampled_from(["x-a", "x-b"]), MATCH_VALUE, min_size=1, max_size=2))
        if draw(st.booleans()):
            match["model"] = draw(st.sampled_from(["llama", "gpt"]))
        rule: dict[str, Any] = {"destination": {"modelServerRef": {"name": draw(st.sampled_from(SERVERS))}}}
        if match:
            rule["match"] = match
        if draw(st.booleans()):
            rule["weight"] = draw(st.integers(1, 100))
        rules.append(rule)
    spec: dict[str, Any] = {"routes": rules}
    if draw(st.booleans()):
        spec["path"] = path(draw(st.lists(SEGMENT, min_size=1, max_size=3)))
    if draw(st.booleans()):
        spec["fallback"] = {"modelServerRef": {"name": draw(st.sampled_from(SERVERS))}}
    return {"apiVersion": NETWORKING, "kind": "ModelRoute", "metadata": {"name": name}, "spec": spec}


@st.composite
def worlds(draw: st.DrawFn) -> World:
    chosen = draw(st.lists(st.sampled_from(SERVERS), min_size=1, max_size=5, unique=True))
    docs = [draw(servers(n)) for n in chosen]
    docs += [draw(model_routes(f"r{i}")) for i in range(draw(st.integers(0, 4)))]
    docs += [{"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer", "metadata": {"name": n},
              "spec": {"modelRef": {"name": "m"}, "replicas": 1}} for n in chosen]
    objects = tuple(KIND_BY_NAME[d["kind"]].model_validate(d) for d in [*docs, *SECRETS])
    endpoints = {
        ObjectKey("ModelInfer", "default", n): tuple(
            BackendEndpoint(f"10.0.0.{i + 1}", 8000, draw(st.booleans())) for i in range(draw(st.integers(0, 2)))
        )
        for n in chosen
    }
    return World(objects=objects, endpoints=endpoints)


def check_splits(compiled) -> None:  # type: ignore[no-untyped-def]
    assert compiled.gateway is not None
    for lst in compiled.gateway.listeners:
        (vhost,) = serialize.parse(compiled.resources[ROUTE][table_name(compiled.resources, lst.name)]).virtual_hosts
        by_name = {r.name: r for r in vhost.routes}
        for r in lst.routes:
            if len(r.backends) > 1:
                got = [c.weight.value for c in by_name[r.name].route.weighted_clusters.clusters]
                want = [b.weight for b in r.backends]
                assert [Fraction(g, sum(got)) for g in got] == [Fraction(w, sum(want)) for w in want]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from([Target(), Target(role="sidecar", privileged_port_offset=10000)]))
def test_random_worlds_compile_consistently(world: World, target: Target) -> None:
    first = engine.compile(world, target)
    assert engine.compile(world, target).resources == first.resources
    translator = Translator()
    engine.compile(world, target, translator=translator)
    assert engine.compile(world, target, translator=translator).resources == first.resources
    assert dangling_references(first.resources) == []
    check_splits(first)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_envoy_accepts_random_worlds(world: World) -> None:
    verdict = validate(engine.static_bootstrap(engine.compile(world, Target(privileged_port_offset=10000)).resources))
    assert verdict.ok, verdict.message
