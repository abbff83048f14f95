"""Random valid worlds: resolution never raises and its output is self-consistent
(the invariants translate and the xDS server rely on)."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from routing_engine.api.resources import Resource
from routing_engine.world import Target
from tests.resolve.build import infer, route, run, secret, server, to, up

NAMES = ["a", "b", "c", "d", "e"]
PATHS = ["/v1", "/v1/a", "/v1/a/b", "/v2", "/"]
CERT = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nB\n-----END PRIVATE KEY-----\n"
STAMPS = [None, "2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"]


@st.composite
def servers(draw: st.DrawFn) -> Resource:
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["tls"] = {"enabled": True, "secretName": draw(st.sampled_from(["cert", "other-cert", "missing"]))}
    auth = draw(st.sampled_from([None, "jwt", "apiKey"]))
    if auth == "jwt":
        extra["authentication"] = {"enabled": True, "type": "jwt",
                                   "config": {"issuer": "https://i", "jwksUri": "https://i/jwks"}}
    elif auth == "apiKey":
        extra["authentication"] = {"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}}
    if draw(st.booleans()):
        extra["rateLimit"] = {"enabled": True, "requestsPerSecond": draw(st.integers(1, 100))}
    return server(draw(st.sampled_from(NAMES)), draw(st.sampled_from(PATHS)), draw(st.sampled_from([80, 8080, 9090])),
                  namespace=draw(st.sampled_from(["default", "ns"])), created=draw(st.sampled_from(STAMPS)),
                  infer=draw(st.sampled_from(NAMES)), **extra)


MATCHES: list[dict[str, Any]] = [{}, {"model": "m"}, {"headers": {"x": "1"}}, {"path": "/v1/*"}, {"path": "/v1/a/x"},
                                 {"headers": {"x": {"present": True}}}, {"queryParams": {"q": {"prefix": "a"}}}]


@st.composite
def routes(draw: st.DrawFn) -> Resource:
    entries = [
        to(draw(st.sampled_from(NAMES + ["missing"])), draw(st.sampled_from([None, "ns"])),
           match=draw(st.sampled_from(MATCHES)), **({"weight": w} if (w := draw(st.sampled_from([None, 0, 30, 100]))) is not None else {}))
        for _ in range(draw(st.integers(1, 4)))
    ]
    spec: dict[str, Any] = {"routes": entries}
    if draw(st.booleans()):
        spec["path"] = draw(st.sampled_from(PATHS + ["/v1/a/chat"]))
    if draw(st.booleans()):
        spec["fallback"] = {"modelServerRef": {"name": draw(st.sampled_from(NAMES))}}
    if draw(st.booleans()):
        spec["canary"] = {"enabled": True, "trafficSplit": {"stable": 80, "canary": 20}}
    try:  # the providers keep a route the model refuses (e.g. all weights 0) out of the world
        return route(draw(st.sampled_from(["r1", "r2", "r3"])), spec, created=draw(st.sampled_from(STAMPS)))
    except ValidationError:
        assume(False)
        raise


FIXED: list[Resource] = [
    secret("cert", {"tls.crt": CERT, "tls.key": KEY}), secret("other-cert", {"tls.crt": CERT, "tls.key": KEY}),
    secret("keys", {"k": "v"}), infer("a"), infer("b"), infer("c"),
]


@settings(max_examples=150, deadline=None)
@given(st.lists(servers(), max_size=8), st.lists(routes(), max_size=4), st.booleans())
def test_random_worlds_resolve_consistently(srv: list[Resource], rts: list[Resource], sidecar: bool) -> None:
    target = Target(role="sidecar", namespaces=frozenset({"default"})) if sidecar else Target()
    res = run(srv + rts + FIXED, target, endpoints=up("a", "b"))
    backends = {b.name for b in res.gateway.backends}
    assert len(backends) == len(res.gateway.backends)
    assert len({l.port for l in res.gateway.listeners}) == len(res.gateway.listeners)
    for listener in res.gateway.listeners:
        names = [r.name for r in listener.routes]
        assert len(names) == len(set(names)), names
        for r in listener.routes:
            assert r.backends and sum(b.weight for b in r.backends) > 0
            assert {b.backend for b in r.backends} <= backends
            assert {b.failover_to for b in r.backends if b.failover_to} <= backends
            assert [p.name for p in r.auth] == sorted({p.name for p in r.auth})
        assert {b for b, _ in listener.rate_limits} <= backends
        assert set(listener.ready_backends) <= backends
        server_paths = [(r.match.path.value) for r in listener.routes if r.owner.kind == "ModelServer"]
        assert len(server_paths) == len(set(server_paths))
    for key, status in res.statuses.items():
        phases = {"ModelServer": {"Pending", "Ready", "Failed"}, "ModelRoute": {"Pending", "Active", "Failed"}}[key.kind]
        assert status.phase in phases
        accepted = next(c for c in status.conditions if c.type == "Accepted")
        if accepted.status == "False" or key.kind == "ModelRoute":
            assert (accepted.status == "False") == (status.phase == "Failed")
        if accepted.status == "False":
            assert accepted.reason in {"ModelNotFound", "ValidationFailed", "NetworkPolicyViolation"}
            assert accepted.message.startswith(str(key) + ": ")
    # Every in-scope object got a status: all servers and routes for the gateway.
    if not sidecar:
        assert {k for k in res.statuses} == {o.key for o in srv + rts}
