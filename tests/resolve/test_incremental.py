"""A `Compiler` kept across compiles (what the control loop does) gives exactly what a
fresh one-shot compile (`engine.compile`: one-shot resolve and the plain `translate`) gives, after any sequence of edits: byte-identical resources, equal
statuses, owners, IR and served routes. Edits cover everything a memoized outcome depends on —
routes, servers (port, path, TLS, auth, age, allow-from, plugin extensions), ModelInfers, Secrets,
endpoints, live weights, additions and deletions, objects their source refuses as invalid
(`World.refused`) — and providers that hand back a new but equal object for an unchanged
manifest.

Half the examples are `healthy`: references mostly resolve, so routes are Accepted and
compiled (about 40% of route statuses, against 3% when every reference was drawn at
random); the other half keep drawing failing ones. Without the healthy half, removing
the resolver's "a server at a path this route looked up moved" check passed 4 runs of
4; with it, it fails every run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import base64
from typing import Any

from hypothesis import HealthCheck, given, settings
from routing_engine.translate import scopes
from hypothesis import strategies as st
from pydantic import ValidationError

from routing_engine import engine, plugins
from routing_engine.api.resources import KIND_BY_NAME, ObjectKey, Resource
from routing_engine.world import BackendEndpoint, Compiled, Target, World
from tests.support.plugins import RequestHeadersPlugin
from tests.translate.builders import JWKS, TLS_CERT, TLS_KEY
from tests.translate.builders import table_name

NET = "networking.matrixinfer.ai/v1alpha1"
SERVERS = ["s0", "s1", "s2", "s3", "s4"]
ROUTES = ["r0", "r1", "r2", "r3"]
NAMESPACES = ["default", "team"]
PATHS = ["/v1", "/v1/a", "/v1/a/b", "/v1/b", "/v2", "/"]
ADAPTERS = ["sql", "chat"]  # LoRA adapters a ModelInfer may declare (issue 18)
ALLOW = "networking.matrixinfer.ai/allow-from"
TARGETS = [Target(), Target(role="sidecar", privileged_port_offset=10000, namespaces=frozenset({"default"}))]
PLUGINS = plugins.with_builtin([RequestHeadersPlugin()])
# spec.extensions a server may have: none, valid values, a value the plugin refuses
EXTENSIONS = [None, {"requestHeaders": {"add": {"x-tier": "gold"}}}, {"requestHeaders": {"add": {"x-tier": "silver"}}},
              {"requestHeaders": {"add": {}}}]


def secret_docs(namespace: str, variant: int) -> list[dict[str, Any]]:
    keys = {"a": "key-a"} if variant == 0 else {"a": "key-a", "b": "key-b"}
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jwks", "namespace": namespace},
         "stringData": {"jwks": JWKS if variant == 0 else "not json"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys", "namespace": namespace}, "stringData": keys},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cert", "namespace": namespace},
         "type": "kubernetes.io/tls",
         "data": {"tls.crt": base64.b64encode(TLS_CERT).decode(), "tls.key": base64.b64encode(TLS_KEY).decode()}},
    ]


@st.composite
def server_doc(draw: st.DrawFn, name: str, healthy: bool = False) -> dict[str, Any]:
    """A ModelServer; `healthy` leaves out what makes one Failed (a missing ModelInfer,
    TLS secret or JWKS, extensions the plugin refuses)."""
    namespace = draw(st.sampled_from(NAMESPACES))
    port = draw(st.sampled_from([8080, 8081, 443]))
    spec: dict[str, Any] = {
        "modelInferRef": {"name": name if healthy else draw(st.sampled_from([name, name, name, "gone"]))},
        "service": {"port": port},
        "routing": {"path": draw(st.sampled_from(PATHS[:-1])) + "/" + name if draw(st.booleans())
                    else draw(st.sampled_from(PATHS)),
                    "timeout": draw(st.sampled_from(["500ms", "30s"])), "retries": draw(st.integers(0, 3))},
    }
    if draw(st.booleans()):
        spec["rateLimit"] = {"enabled": True, "requestsPerSecond": draw(st.integers(1, 50)), "global": draw(st.booleans())}
    auth = draw(st.sampled_from([None, "jwt-uri", "apiKey"] if healthy else [None, "jwt-uri", "jwt-secret", "apiKey"]))
    if auth == "jwt-uri":
        spec["authentication"] = {"enabled": True, "type": "jwt",
                                  "config": {"issuer": "https://iss", "jwksUri": "https://keys.example/jwks.json"}}
    elif auth == "jwt-secret":
        spec["authentication"] = {"enabled": True, "type": "jwt", "config": {"issuer": "https://iss", "jwksSecretName": "jwks"}}
    elif auth == "apiKey":
        spec["authentication"] = {"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}}
    if port == 443 and draw(st.booleans()):
        spec["tls"] = {"enabled": True, "secretName": "cert" if healthy else draw(st.sampled_from(["cert", "missing"]))}
    balancing = draw(st.sampled_from([None, "leastRequest", "loadAware", "prefixAffinity"]))
    if balancing is not None:
        spec["loadBalancing"] = balancing
    extensions = draw(st.sampled_from(EXTENSIONS[:-1] if healthy else EXTENSIONS))
    if extensions is not None:
        spec["extensions"] = extensions
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if draw(st.booleans()):
        metadata["annotations"] = {ALLOW: draw(st.sampled_from(["*", "team", "default"]))}
    if draw(st.booleans()):
        metadata["creationTimestamp"] = f"2024-01-0{draw(st.integers(1, 3))}T00:00:00Z"
    return {"apiVersion": NET, "kind": "ModelServer", "metadata": metadata, "spec": spec}


@st.composite
def server_ref(draw: st.DrawFn, namespace: str, servers: Sequence[tuple[str, str]], healthy: bool) -> dict[str, Any]:
    """Mostly (`healthy`: always) a server that exists (`servers`: its namespace and
    name), else any name: a route whose references fail is Rejected, and compiles little."""
    if servers and (healthy or draw(st.integers(0, 3))):
        near = [server for server in servers if server[0] == namespace]  # no allow-from needed
        at, name = draw(st.sampled_from(near if near and (healthy or draw(st.booleans())) else servers))
        return {"name": name} if at == namespace and draw(st.booleans()) else {"name": name, "namespace": at}
    ref: dict[str, Any] = {"name": draw(st.sampled_from(SERVERS))}
    if draw(st.booleans()):
        ref["namespace"] = draw(st.sampled_from(NAMESPACES))
    return ref


@st.composite
def route_doc(draw: st.DrawFn, name: str, servers: Sequence[tuple[str, str]] = (), healthy: bool = False) -> dict[str, Any]:
    namespace = draw(st.sampled_from(sorted({at for at, _ in servers}) if healthy and servers else NAMESPACES))
    rules = []
    for _ in range(draw(st.integers(1, 3))):
        match: dict[str, Any] = {}
        if draw(st.booleans()):
            match["headers"] = {"x-a": draw(st.sampled_from(["1", "2"]))}
        if draw(st.integers(0, 3)) == 0:
            match["model"] = draw(st.sampled_from(ADAPTERS + ["base"]))
        if draw(st.integers(0, 3)) == 0:
            match["path"] = draw(st.sampled_from(["/v1/a/*", "/v1/a/b", "/v1/*/x"]))
        rule: dict[str, Any] = {"destination": {"modelServerRef": draw(server_ref(namespace, servers, healthy))}}
        if match:
            rule["match"] = match
        if draw(st.booleans()):
            rule["weight"] = draw(st.integers(0, 100))
        rules.append(rule)
    spec: dict[str, Any] = {"routes": rules}
    if draw(st.booleans()):
        spec["path"] = draw(st.sampled_from(PATHS))
    if draw(st.booleans()):
        spec["fallback"] = {"modelServerRef": draw(server_ref(namespace, servers, healthy))}
    if len(rules) == 2 and draw(st.booleans()):
        spec["canary"] = {"enabled": True}
        for rule in rules:
            rule.pop("match", None)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if draw(st.booleans()):
        metadata["creationTimestamp"] = f"2024-01-0{draw(st.integers(1, 3))}T00:00:00Z"
    return {"apiVersion": NET, "kind": "ModelRoute", "metadata": metadata, "spec": spec}


def infer_doc(name: str, namespace: str, allow: bool, adapters: tuple[str, ...] = ()) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if allow:
        metadata["annotations"] = {ALLOW: "*"}
    spec: dict[str, Any] = {"modelRef": {"name": "m"}, "replicas": 1}
    if adapters:
        spec["adapters"] = [{"name": a} for a in adapters]
    return {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer", "metadata": metadata, "spec": spec}


class State:
    """Manifests by slot, and the objects built from them: an unchanged manifest keeps its
    object (as the file provider does), unless the step re-parses everything."""

    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy  # edits mostly keep references resolvable
        self.docs: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, tuple[dict[str, Any], Resource]] = {}
        self.endpoints: dict[ObjectKey, tuple[BackendEndpoint, ...]] = {}
        self.live: dict[ObjectKey, tuple[int, int]] = {}

    def servers(self) -> list[tuple[str, str]]:
        """(namespace, name) of every ModelServer manifest."""
        return sorted((d["metadata"]["namespace"], d["metadata"]["name"])
                      for slot, d in self.docs.items() if slot.startswith("server/"))

    def world(self, reparse: bool) -> World:
        built: dict[str, tuple[dict[str, Any], Resource]] = {}
        refused: set[ObjectKey] = set()
        for slot, doc in self.docs.items():
            known = self.objects.get(slot)
            if known is None or known[0] != doc or reparse:
                try:
                    known = (doc, KIND_BY_NAME[doc["kind"]].model_validate(doc))
                except ValidationError:  # what the model refuses never reaches the engine: it is refused
                    meta = doc["metadata"]
                    refused.add(ObjectKey(doc["kind"], meta.get("namespace", "default"), meta["name"]))
                    continue
            built[slot] = known
        self.objects = built
        return World(tuple(obj for _, obj in built.values()), dict(self.endpoints), dict(self.live), frozenset(refused))


def broken(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` made invalid, keeping its kind, name and namespace: its source refuses it, and
    what refers to it says so (`World.refused`)."""
    kind = doc["kind"]
    if kind == "Secret":
        return {**doc, "data": {"x": "not base64!"}}
    spec = dict(doc["spec"])
    if kind == "ModelServer":
        spec["routing"] = {**spec["routing"], "timeout": "30"}
    elif kind == "ModelInfer":
        spec["replicas"] = -1
    else:
        spec["routes"] = []
    return {**doc, "spec": spec}


@st.composite
def edit(draw: st.DrawFn, state: State) -> None:
    kind = draw(st.sampled_from(["server", "route", "route", "delete", "infer", "secret", "endpoints", "live", "none",
                                 "break"]))
    if kind == "server":
        name = draw(st.sampled_from(SERVERS))
        state.docs[f"server/{name}"] = draw(server_doc(name, state.healthy))
    elif kind == "route":
        name = draw(st.sampled_from(ROUTES))
        state.docs[f"route/{name}"] = draw(route_doc(name, state.servers(), state.healthy))
    elif kind == "delete" and state.docs:
        del state.docs[draw(st.sampled_from(sorted(state.docs)))]
    elif kind == "break" and state.docs:
        slot = draw(st.sampled_from(sorted(state.docs)))
        state.docs[slot] = broken(state.docs[slot])
    elif kind == "infer":
        name = draw(st.sampled_from(SERVERS))
        namespace = draw(st.sampled_from(NAMESPACES))
        adapters = tuple(a for a in ADAPTERS if draw(st.booleans()))
        state.docs[f"infer/{namespace}/{name}"] = infer_doc(name, namespace, draw(st.booleans()), adapters)
    elif kind == "secret":
        namespace = draw(st.sampled_from(NAMESPACES))
        for doc in secret_docs(namespace, draw(st.integers(0, 1))):
            state.docs[f"secret/{namespace}/{doc['metadata']['name']}"] = doc
    elif kind == "endpoints":
        key = ObjectKey("ModelInfer", draw(st.sampled_from(NAMESPACES)), draw(st.sampled_from(SERVERS)))
        state.endpoints[key] = tuple(
            BackendEndpoint(f"10.0.0.{i + 1}", draw(st.sampled_from([None, 8000])), draw(st.booleans()),
                            draw(st.sampled_from([None, (), ("sql",), ("sql", "chat"), ("other",)])),
                            draw(st.sampled_from([None, 1, 100])))
            for i in range(draw(st.integers(0, 2))))
    elif kind == "live":
        # mostly a route that exists (a canary's live weights only act on its own route)
        routes = sorted(ObjectKey("ModelRoute", d["metadata"]["namespace"], d["metadata"]["name"])
                        for slot, d in state.docs.items() if slot.startswith("route/"))
        if routes and draw(st.integers(0, 3)):
            key = draw(st.sampled_from(routes))
        else:
            key = ObjectKey("ModelRoute", draw(st.sampled_from(NAMESPACES)), draw(st.sampled_from(ROUTES)))
        state.live[key] = draw(st.sampled_from([(90, 10), (0, 100), (50, 50), (0, 0)]))


def assert_same(incremental: Compiled, fresh: Compiled) -> None:
    assert incremental.resources == fresh.resources
    assert [list(by_name) for by_name in incremental.resources.values()] == [list(by_name) for by_name in fresh.resources.values()]
    assert dict(incremental.statuses) == dict(fresh.statuses)
    assert list(incremental.statuses) == list(fresh.statuses)
    assert dict(incremental.owners) == dict(fresh.owners)
    assert incremental.gateway == fresh.gateway
    assert dict(incremental.routes) == dict(fresh.routes)
    assert list(incremental.routes) == list(fresh.routes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data(), st.sampled_from(TARGETS), st.sampled_from([scopes.MIN_ROUTES, 1]))
def test_incremental_compiles_equal_fresh_ones_after_random_edits(data: st.DataObject, target: Target,
                                                                   min_routes: int) -> None:
    """With `min_routes` 1 every listener whose routes allow it is split into scoped
    tables (translate/scopes.py), so the scoped layout's patching is checked too."""
    with patched_min_routes(min_routes):
        _random_edits(data, target)


@contextmanager
def patched_min_routes(value: int) -> Iterator[None]:
    before = scopes.MIN_ROUTES
    scopes.MIN_ROUTES = value
    try:
        yield
    finally:
        scopes.MIN_ROUTES = before


def _random_edits(data: st.DataObject, target: Target) -> None:
    state = State(healthy=data.draw(st.booleans()))
    for namespace in NAMESPACES:
        for doc in secret_docs(namespace, 0):
            state.docs[f"secret/{namespace}/{doc['metadata']['name']}"] = doc
    for name in SERVERS[:3]:
        state.docs[f"server/{name}"] = data.draw(server_doc(name, state.healthy))
        for namespace in NAMESPACES:
            state.docs[f"infer/{namespace}/{name}"] = infer_doc(name, namespace, False)
    for name in ROUTES[:2]:
        state.docs[f"route/{name}"] = data.draw(route_doc(name, state.servers(), state.healthy))
    compiler = engine.Compiler(PLUGINS)
    for _ in range(data.draw(st.integers(1, 12))):
        world = state.world(reparse=data.draw(st.integers(0, 4)) == 0)
        # against the definition: one-shot resolve and the one-shot, plain `translate`
        assert_same(compiler.compile(world, target), engine.compile(world, target, plugins=PLUGINS))
        data.draw(edit(state))


def test_a_one_route_edit_reuses_everything_else() -> None:
    """The bench's shape, small: editing one route's weights re-resolves that route and
    re-serializes only its changed route; every other status is the same object."""
    from bench import worlds

    objects = worlds.objects(40)
    compiler = engine.Compiler()
    before = compiler.compile(worlds.world(40, objects), Target())
    after = compiler.compile(worlds.edited(40, objects, which=7, weight=55), Target())
    assert compiler.translator.last_stats.misses["route"] == 1  # the weighted group; the others are equal
    assert not compiler.translator.last_stats.misses["backend"]
    rebuilt = [key for key, status in after.statuses.items() if before.statuses[key] is not status]
    # every other status object is reused (the edited route's may come back as the same
    # object too: the status of a route without problems is one value, shared)
    assert set(rebuilt) <= {ObjectKey("ModelRoute", "bench", "route-7")}
    assert after.statuses == before.statuses  # and a weight edit changes no condition
    edited = {(t, n) for t, by_name in after.resources.items() for n, r in by_name.items()
              if before.resources[t][n].version != r.version}
    assert edited == {("type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                       table_name(after.resources, "listener/8083"))}
    assert after.resources == engine.compile(worlds.edited(40, objects, which=7, weight=55), Target()).resources


def test_live_canary_weights_reach_both_compiles() -> None:
    """A canary's live weights (what a rollout sets) change the split in a kept `Compiler`
    and in the one-shot definition alike (the random edits reach this combination rarely)."""
    from routing_engine import serialize
    from routing_engine.api.resources import ModelInfer, ModelRoute, ModelServer
    from routing_engine.translate.xds import ROUTE

    objects: list[Resource] = []
    for name in ("stable", "next"):
        objects.append(ModelServer.model_validate({
            "apiVersion": NET, "kind": "ModelServer", "metadata": {"name": name, "namespace": "default"},
            "spec": {"modelInferRef": {"name": name}, "service": {"port": 8080}, "routing": {"path": f"/v1/{name}"}}}))
        objects.append(ModelInfer.model_validate(infer_doc(name, "default", False)))
    objects.append(ModelRoute.model_validate({
        "apiVersion": NET, "kind": "ModelRoute", "metadata": {"name": "chat", "namespace": "default"},
        "spec": {"path": "/v1/chat", "canary": {"enabled": True},
                 "routes": [{"destination": {"modelServerRef": {"name": "stable"}}, "weight": 100},
                            {"destination": {"modelServerRef": {"name": "next"}}, "weight": 0}]}}))
    key = ObjectKey("ModelRoute", "default", "chat")
    compiler = engine.Compiler()
    compiler.compile(World(tuple(objects)), Target())
    world = World(tuple(objects), {}, {key: (70, 30)})
    kept, fresh = compiler.compile(world, Target()), engine.compile(world, Target())
    assert_same(kept, fresh)
    splits = [[c.weight.value for c in r.route.weighted_clusters.clusters]
              for table in fresh.resources[ROUTE].values() for host in serialize.parse(table).virtual_hosts  # type: ignore[attr-defined]
              for r in host.routes if r.route.weighted_clusters.clusters]
    assert splits == [[7, 3]]  # 70/30 divided by their gcd


def test_a_change_of_the_refused_objects_alone_reaches_both_compiles() -> None:
    """References to objects that are absent, then refused as invalid by their source,
    then absent again, with the very same objects each time: a kept `Compiler` must see
    that `World.refused` changed (the messages, and the reasons, change with it)."""
    from routing_engine.api.resources import ModelRoute, ModelServer

    server = ModelServer.model_validate({
        "apiVersion": NET, "kind": "ModelServer", "metadata": {"name": "a", "namespace": "default"},
        "spec": {"modelInferRef": {"name": "mi"}, "service": {"port": 8080}, "routing": {"path": "/v1/a"},
                 "authentication": {"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}}}})
    route = ModelRoute.model_validate({
        "apiVersion": NET, "kind": "ModelRoute", "metadata": {"name": "r", "namespace": "default"},
        "spec": {"path": "/v1/r", "routes": [{"destination": {"modelServerRef": {"name": "b"}}}]}})
    objects = (server, route)
    infer, keys, other = (ObjectKey("ModelInfer", "default", "mi"), ObjectKey("Secret", "default", "keys"),
                          ObjectKey("ModelServer", "default", "b"))
    compiler = engine.Compiler()
    for refused in (frozenset(), frozenset({infer, keys, other}), frozenset(), frozenset({infer}), frozenset({keys}),
                    frozenset({other}), frozenset()):
        world = World(objects, refused=refused)
        compiled = compiler.compile(world, Target())
        assert_same(compiled, engine.compile(world, Target()))
        conditions = {(key.kind, c.type): c for key, status in compiled.statuses.items() for c in status.conditions}
        said = {key: f"{key} exists but is invalid (its own errors say why)" if key in refused else f"{key} not found"
                for key in (infer, keys, other)}
        route_refs = conditions["ModelRoute", "ResolvedRefs"]
        assert route_refs.reason == ("ValidationFailed" if other in refused else "ModelNotFound")
        assert route_refs.message == f"ModelRoute default/r: spec.routes[0].destination.modelServerRef: {said[other]}"
        server_refs = conditions["ModelServer", "ResolvedRefs"]
        assert f"spec.modelInferRef: {said[infer]}" in server_refs.message
        assert f"spec.authentication.config.secretName: {said[keys]}" in server_refs.message
