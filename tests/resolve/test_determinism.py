"""Same world in any object order → the identical Resolution (the xDS versions are
content hashes: a reordering must never look like a change)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from routing_engine.api.resources import Resource
from routing_engine.world import Target
from tests.resolve.build import infer, mr, route, run, secret, server, to, up

CERT = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nB\n-----END PRIVATE KEY-----\n"


def busy_world() -> list[Resource]:
    """Conflicts, TLS, auth, failures, fallbacks, canary and shadowing all at once."""
    return [
        server("a", "/v1/a", 8080, created="2024-01-01T00:00:00Z"),
        server("a2", "/v1/a", 8080),
        server("b", "/v1/b", 8080, rateLimit={"enabled": True, "requestsPerSecond": 3}),
        server("t", "/v1/t", 8443, tls={"enabled": True, "secretName": "cert"}),
        server("t2", "/v1/t2", 8443),
        server("k", "/v1/k", 9090, authentication={"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}}),
        server("m", "/v1/m", 9090, namespace="models", annotations={"networking.matrixinfer.ai/allow-from": "*"}),
        secret("cert", {"tls.crt": CERT, "tls.key": KEY}),
        secret("keys", {"x": "1", "y": "2"}),
        infer("a"), infer("b"), infer("k"),
        route("r1", {"routes": [to("a", weight=80), to("b", weight=20), to("k", match={"model": "k"})],
                     "fallback": {"modelServerRef": {"name": "b"}}}, created="2024-01-01T00:00:00Z"),
        route("r2", {"path": "/v1/a", "routes": [to("m", "models"), to("a", match={"headers": {"x": "1"}})]}),
        route("r3", {"routes": [to("a"), to("b")], "canary": {"enabled": True, "trafficSplit": {"stable": 95, "canary": 5}}}),
        route("bad", {"routes": [to("nowhere")]}),
    ]


def test_shuffled_object_order_gives_identical_resolution() -> None:
    objs = busy_world()
    expected = run(objs, endpoints=up("a", "b"), live_weights={mr("r3"): (60, 40)})
    assert len(expected.gateway.listeners) == 3
    rng = random.Random(7)
    for _ in range(20):
        shuffled = objs[:]
        rng.shuffle(shuffled)
        got = run(shuffled, endpoints=up("a", "b"), live_weights={mr("r3"): (60, 40)})
        assert got == expected
        assert list(got.statuses) == list(expected.statuses)


def test_statuses_are_sorted_by_key() -> None:
    res = run(busy_world())
    assert list(res.statuses) == sorted(res.statuses)


@settings(max_examples=40, deadline=None)
@given(st.permutations(busy_world()), st.sampled_from([Target(), Target(role="sidecar", namespaces=frozenset({"default"}))]))
def test_any_permutation_resolves_the_same(objs: list[Resource], target: Target) -> None:
    assert run(objs, target) == run(busy_world(), target)


def test_duplicate_keys_resolve_the_same_in_either_order() -> None:
    first = server("a", "/v1/one")
    second = server("a", "/v1/two")
    one, two = run([first, second]), run([second, first])
    assert one == two
    assert len(one.gateway.backends) == 1
