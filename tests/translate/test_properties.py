"""Property test: random valid gateways (many servers, routes, matches, weights, auth, TLS,
rate limits) always translate into output Envoy accepts, deterministically, with every
reference resolved and every split in the proportions asked for.

Each example costs one real `envoy --mode validate` (~0.5 s), so example counts are small;
the structural properties run on more examples without Envoy.
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelroute.envoy_check import validate
from routing_engine import engine, ir
from routing_engine.incremental import Translator
from routing_engine.translate import translate
from tests.support.references import dangling_references
from routing_engine.translate.xds import ROUTE
from routing_engine import serialize
from tests.translate.builders import JWKS, TLS_CERT, TLS_KEY, route_key, server_key, table_name

SEGMENTS = st.sampled_from(["v1", "models", "llama", "chat", "a.b", "x-y", "infer", "(z)"])
BACKENDS = [f"modelserver/default/s{i}" for i in range(6)]
JWT = [
    ir.JwtProvider("default/s0", "https://issuer.example", ("api",), jwks_uri="https://keys.example/jwks.json"),
    ir.JwtProvider("default/s1", "https://other.example", jwks_inline=JWKS),
]
API_KEY = ir.ApiKeyAuth("default/s2", "x-api-key", ("k1", "k2"))


@st.composite
def paths(draw: st.DrawFn) -> ir.PathMatch:
    segments = draw(st.lists(SEGMENTS, min_size=0, max_size=3))
    kind = draw(st.sampled_from(["exact", "segment_prefix", "glob"]))
    if kind == "glob":
        segments = [*segments, draw(st.sampled_from(["*", "m-*", "*.json"]))]
    return ir.PathMatch(kind, "/" + "/".join(segments))


string_matches = st.one_of(
    st.builds(ir.StringMatch, st.just("exact"), st.sampled_from(["a", "gold", "v2"])),
    st.builds(ir.StringMatch, st.just("prefix"), st.sampled_from(["g", "v"])),
    st.builds(ir.StringMatch, st.just("regex"), st.sampled_from(["v[0-9]+", "(a|b)"])),
    st.just(ir.StringMatch("present")),
)


@st.composite
def routes(draw: st.DrawFn, index: int) -> ir.Route:
    chosen = draw(st.lists(st.sampled_from(BACKENDS), min_size=1, max_size=3, unique=True))
    weights = draw(st.lists(st.integers(0, 100), min_size=len(chosen), max_size=len(chosen)).filter(any))
    fallback = draw(st.none() | st.sampled_from(BACKENDS))
    backends = tuple(ir.WeightedBackend(b, w, failover_to=fallback) for b, w in zip(chosen, weights, strict=True))
    match = ir.RouteMatch(
        path=draw(paths()),
        headers=tuple(draw(st.dictionaries(st.sampled_from(["x-a", "x-b"]), string_matches, max_size=2)).items()),
        query_params=tuple(draw(st.dictionaries(st.sampled_from(["q", "v"]), string_matches, max_size=1)).items()),
        model=draw(st.none() | st.sampled_from(["llama", "gpt"])),
    )
    auth = tuple(draw(st.lists(st.sampled_from([*JWT, API_KEY]), max_size=2, unique=True)))
    return ir.Route(
        name=f"r{index}",
        owner=route_key(f"r{index}"),
        match=match,
        backends=backends,
        timeout_ms=draw(st.integers(1, 600_000)),
        retries=draw(st.integers(0, 5)),
        auth=auth,
    )


@st.composite
def gateways(draw: st.DrawFn) -> ir.Gateway:
    listeners = []
    for n in range(draw(st.integers(1, 3))):
        count = draw(st.integers(0, 6))
        rate_limits = draw(st.dictionaries(st.sampled_from(BACKENDS), st.builds(
            ir.RateLimit, st.integers(1, 1000), st.integers(1, 2000), st.booleans()), max_size=3))
        tls = ir.TlsCertificate(f"default/cert{n}", TLS_CERT, TLS_KEY) if draw(st.booleans()) else None
        listeners.append(ir.Listener(
            name=f"listener/{8000 + n}", address="0.0.0.0", port=8000 + n,
            routes=tuple(draw(routes(i)) for i in range(count)), tls=tls,
            ready_backends=tuple(draw(st.lists(st.sampled_from(BACKENDS), max_size=2, unique=True))),
            rate_limits=tuple(sorted(rate_limits.items())),
        ))
    endpoints = st.lists(st.builds(ir.Endpoint, st.sampled_from(["10.0.0.1", "10.0.0.2", "127.0.0.1"]),
                                   st.integers(1, 65535), st.booleans()), max_size=3, unique_by=lambda e: (e.address, e.port))
    backends = tuple(ir.Backend(b, server_key(b.rsplit("/", 1)[-1]), tuple(draw(endpoints))) for b in BACKENDS)
    return ir.Gateway(listeners=tuple(listeners), backends=backends)


def check_weights(gateway: ir.Gateway, result) -> None:  # type: ignore[no-untyped-def]
    for lst in gateway.listeners:
        (vhost,) = serialize.parse(result.resources[ROUTE][table_name(result.resources, lst.name)]).virtual_hosts
        by_name = {r.name: r for r in vhost.routes}
        for r in lst.routes:
            proto = by_name[r.name].route
            if len(r.backends) == 1:
                assert proto.cluster
                continue
            got = [c.weight.value for c in proto.weighted_clusters.clusters]
            want = [b.weight for b in r.backends]
            assert sum(got) > 0
            assert [Fraction(g, sum(got)) for g in got] == [Fraction(w, sum(want)) for w in want]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gateways())
def test_structure_determinism_and_weights(gateway: ir.Gateway) -> None:
    first = translate(gateway)
    assert not first.errors
    assert translate(gateway).resources == first.resources
    memo = Translator()
    memo.translate(gateway)
    assert memo.translate(gateway).resources == first.resources
    assert memo.last_stats.misses["route"] == 0
    assert dangling_references(first.resources) == []
    check_weights(gateway, first)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gateways())
def test_envoy_accepts_random_gateways(gateway: ir.Gateway) -> None:
    verdict = validate(engine.static_bootstrap(translate(gateway).resources))
    assert verdict.ok, verdict.message
