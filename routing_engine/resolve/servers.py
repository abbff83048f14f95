"""ModelServers → backends, server routes and per-port claims (SPEC 3.1).

Each server is first checked on its own (ModelInfer reference, TLS and auth Secrets,
`spec.extensions` against the installed plugins' models), then servers that passed
compete for ports and paths:
- the oldest server on a port (metadata.creationTimestamp, then namespace/name) decides
  the port's TLS mode — plain HTTP, or TLS with one particular Secret; a younger server
  asking for another mode is Failed (`NetworkPolicyViolation`, naming the winner);
- a port the Envoy uses itself (`Target.reserved_ports`: admin, readiness) is refused;
- with `Target.one_exposure_per_port` (in a cluster), the oldest server on a port also
  decides its exposure: `service.type`, and for LoadBalancer the Service annotations
  (they make a load balancer internal or internet-facing). Every Service of a port reaches
  every server on its listener, so a ClusterIP server sharing a port with a LoadBalancer
  one would be public; a younger server asking for another exposure is Failed the same way;
- on each port the oldest server claiming a `routing.path` (normal form, so `/a/` and
  `/a` are one path) wins it; younger claimants are Failed the same way.
A server that failed its own checks takes no part: it never holds a port or path it
cannot serve, so fixing its Secret can move the port's TLS mode back to it.

A compiled server gets a backend (its ModelInfer's endpoints on `endpoint.port`, else
`service.targetPort`, else `service.port`) and a route on its `routing.path` (segment
prefix). A missing ModelInfer still compiles (cluster without endpoints: the path is
held and answers 503, it does not fall through to another server), and so does one its
source refused as invalid (`ValidationFailed` instead of `ModelNotFound`); a ModelInfer in
another namespace that does not allow this one compiles the same way but the server is
Failed, since waiting will not fix it. Timeout defaults to 60 s (inference is slow),
retries to 2 (Istio's default; translate retries only failures that cannot have
reached a model, so no GPU work is done twice).

Inference-aware routing (issue 18): the backend carries `spec.loadBalancing` and its
ModelInfer's declared LoRA adapters. Each endpoint keeps the declared adapters its replica
reports loaded (not reported yet: none, so adapter requests never reach a replica that
may lack the adapter), and its load-aware weight only when the server is loadAware (the
same replicas behind a leastRequest server stay equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic_core import to_json

from routing_engine import ir, names
from routing_engine.api.extensions import ExtensionModels, parse_extensions
from routing_engine.api.resources import ModelInfer, ModelServer, ModelServerSpec, ObjectKey
from routing_engine.api.types import ForPlugin, parse_duration_ms
from routing_engine.resolve.conditions import NETWORK_POLICY_VIOLATION, VALIDATION_FAILED, Problem, problem, unresolved
from routing_engine.resolve.material import Material, auth_policy, tls_certificate
from routing_engine.resolve.matching import prefix_path
from routing_engine.api.references import allows_from
from routing_engine.resolve.objects import ObjectIndex, age_key
from routing_engine.world import BackendEndpoint, Target

DEFAULT_TIMEOUT_MS = 60_000
DEFAULT_RETRIES = 2
NO_EXTENSIONS: ExtensionModels = MappingProxyType({})
NO_VALUES: Material[tuple[ir.Extension, ...]] = Material(())  # a server without extensions (shared)
# (field, plugin) of the ModelServerSpec fields marked `ForPlugin`: handed over like extensions.
PLUGIN_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (name, mark.plugin) for name, info in ModelServerSpec.model_fields.items()
    for mark in info.metadata if isinstance(mark, ForPlugin))


@dataclass(frozen=True, slots=True)
class ServerOutcome:
    """What resolution concluded about one ModelServer. `backend` is None when the
    server is not compiled (then `problems` says why)."""

    key: ObjectKey
    server: ModelServer
    port: int  # the listener port: Target.port(service.port)
    path: str
    problems: tuple[Problem, ...]  # Accepted=False when non-empty
    ref_problems: tuple[Problem, ...]  # ResolvedRefs=False when non-empty
    infer_forbidden: bool
    backend: ir.Backend | None
    route: ir.Route | None
    tls: ir.TlsCertificate | None
    auth: ir.AuthPolicy | None
    rate_limit: ir.RateLimit | None
    timeout_ms: int | None  # the explicit routing.timeout, if any
    retries: int | None  # the explicit routing.retries, if any
    extensions: tuple[ir.Extension, ...] = ()  # its `spec.extensions`, parsed (compiled servers only)

    @property
    def compiled(self) -> bool:
        return self.backend is not None

    @property
    def healthy(self) -> bool:
        return self.backend is not None and any(e.healthy for e in self.backend.endpoints)


@dataclass(frozen=True, slots=True)
class Own:
    """Results of the checks that need no other ModelServer."""

    infer_problems: tuple[Problem, ...]
    infer_forbidden: bool
    endpoints: tuple[ir.Endpoint, ...]
    adapters: tuple[str, ...]  # the ModelInfer's declared LoRA adapters, sorted
    tls: Material[ir.TlsCertificate]
    auth: Material[ir.AuthPolicy]
    extensions: Material[tuple[ir.Extension, ...]] = NO_VALUES

    @property
    def ok(self) -> bool:
        """Whether the server may claim its port and path (its spec and material are usable)."""
        return self.tls.ok and self.auth.ok and self.extensions.ok


def resolve_servers(
    index: ObjectIndex, endpoints: Mapping[ObjectKey, tuple[BackendEndpoint, ...]], target: Target,
    extensions: ExtensionModels = NO_EXTENSIONS,
) -> dict[ObjectKey, ServerOutcome]:
    """Every ModelServer of the world, by key (sorted).

    Claims are made on listener ports (`target.port(service.port)`), not on the ports
    as written: with a privileged-port offset, 80 and 10080 can become one listener,
    and one listener can only have one TLS mode."""
    own = {key: own_checks(server, index, endpoints, extensions) for key, server in index.servers.items()}
    contenders = [s for s in index.servers.values() if own[s.key].ok]
    lost = claims(sorted(contenders, key=age_key), own, target)
    return {key: outcome(server, own[key], lost.get(key), target) for key, server in index.servers.items()}


def own_checks(
    server: ModelServer, index: ObjectIndex, endpoints: Mapping[ObjectKey, tuple[BackendEndpoint, ...]],
    extensions: ExtensionModels = NO_EXTENSIONS,
) -> Own:
    spec = server.spec
    infer_key = spec.model_infer_ref.resolve(ModelInfer.KIND, server.metadata.namespace)
    infer = index.infers.get(infer_key)
    field = "spec.modelInferRef"
    problems: tuple[Problem, ...] = ()
    forbidden = False
    found: tuple[ir.Endpoint, ...] = ()
    adapters: tuple[str, ...] = ()
    if infer is None:
        reason, rule = unresolved(infer_key, index.refused)
        problems = (problem(reason, server.key, field, rule),)
    elif not allows_from(infer, server.metadata.namespace):
        forbidden = True
        rule = _forbidden_rule(infer_key, server.metadata.namespace)
        problems = (problem(NETWORK_POLICY_VIOLATION, server.key, field, rule),)
    else:
        default_port = spec.service.target_port or spec.service.port
        adapters = tuple(sorted(a.name for a in infer.spec.adapters))
        weighted = spec.load_balancing == "loadAware"
        # (address, port, healthy, adapters, weight): ir.Endpoint's fields, deduplicated and
        # sorted as plain tuples (cheaper than as dataclasses), then made Endpoints
        unique = {(e.address, e.port or default_port, e.healthy,
                   tuple(a for a in adapters if e.adapters is not None and a in e.adapters) if adapters else (),
                   e.weight if weighted else None)
                  for e in endpoints.get(infer_key, ())}
        found = tuple(ir.Endpoint(*row) for row in sorted(unique, key=_endpoint_order))
    return Own(problems, forbidden, found, adapters, tls_certificate(server, index), auth_policy(server, index),
               server_extensions(server, extensions))


def _endpoint_order(row: tuple[str, int, bool, tuple[str, ...], int | None]) -> tuple[str, int, bool, tuple[str, ...], int]:
    address, port, healthy, adapters, weight = row
    return address, port, not healthy, adapters, weight or 0


def server_extensions(server: ModelServer, models: ExtensionModels) -> Material[tuple[ir.Extension, ...]]:
    """What the plugins get of this server: its `spec.extensions`, checked against the
    installed plugins' models, and its fields marked `ForPlugin` (the API model checked
    those already). A problem fails the server closed, like unusable TLS or auth
    material: a plugin may enforce a policy, and serving without it would be serving
    something the user did not write."""
    marked = [(plugin, value) for name, plugin in PLUGIN_FIELDS if (value := getattr(server.spec, name)) is not None]
    raw = server.spec.extensions
    if not raw and not marked:
        return NO_VALUES
    values, problems = parse_extensions(raw, models) if raw else ((), ())
    if problems:
        return Material(spec_problems=tuple(problem(VALIDATION_FAILED, server.key, field, rule)
                                            for field, rule in problems))
    found = sorted([*marked, *values], key=lambda item: item[0])
    return Material(tuple(ir.Extension(plugin, server.key, _canonical(value), value) for plugin, value in found))


def _canonical(value: Any) -> str:
    """The value as JSON (a model's fields in their order): what IR equality goes by."""
    return to_json(value).decode()


def _forbidden_rule(target: ObjectKey, namespace: str) -> str:
    return (
        f"{target.kind} {target.namespace}/{target.name} does not allow references from namespace "
        f'{namespace} (annotation networking.matrixinfer.ai/allow-from)'
    )


def _mode(own: Own) -> str | None:
    """A port's TLS mode: None for plain HTTP, else the certificate's (Secret's) name."""
    return own.tls.value.name if own.tls.value is not None else None


def _describe_mode(mode: str | None) -> str:
    return "plain HTTP" if mode is None else f"TLS with {mode}"


def _port_label(server: ModelServer, listener_port: int) -> str:
    written = server.spec.service.port
    return f"port {written}" if written == listener_port else f"port {written} (listener port {listener_port})"


Exposure = tuple[str, tuple[tuple[str, str], ...]]


def _exposure(server: ModelServer) -> Exposure:
    """How a server's Service exposes its port: the type, and for LoadBalancer the
    annotations (internal or internet-facing, which network)."""
    service = server.spec.service
    annotations = tuple(sorted(service.annotations.items())) if service.type == "LoadBalancer" else ()
    return service.type, annotations


def _describe_exposure(exposure: Exposure) -> str:
    kind, annotations = exposure
    if kind == "ClusterIP":
        return "ClusterIP (inside the cluster only)"
    if kind == "NodePort":
        return "NodePort (on every node's address)"
    shown = ", ".join(f"{k}={v}" for k, v in annotations)
    return f"LoadBalancer with annotations {{{shown}}}" if shown else "LoadBalancer without annotations"


def claims(contenders: list[ModelServer], own: Mapping[ObjectKey, Own], target: Target) -> dict[ObjectKey, Problem]:
    """Port and path conflicts; `contenders` are oldest first. Returns the losers."""
    decider: dict[int, ModelServer] = {}
    holder: dict[tuple[int, str], ModelServer] = {}
    lost: dict[ObjectKey, Problem] = {}
    for server in contenders:
        port = target.port(server.spec.service.port)
        if port in target.reserved_ports:
            rule = f"{_port_label(server, port)} is used by the gateway Envoy itself (admin or readiness): use another port"
            lost[server.key] = problem(NETWORK_POLICY_VIOLATION, server.key, "spec.service.port", rule)
            continue
        first = decider.setdefault(port, server)
        mode, first_mode = _mode(own[server.key]), _mode(own[first.key])
        if mode != first_mode:
            rule = (
                f"{_port_label(server, port)} is served with {_describe_mode(first_mode)} by the older ModelServer "
                f"{first.metadata.namespace}/{first.metadata.name}; this server asks for {_describe_mode(mode)}"
            )
            lost[server.key] = problem(NETWORK_POLICY_VIOLATION, server.key, "spec.tls", rule)
            continue
        exposure, first_exposure = _exposure(server), _exposure(first)
        if target.one_exposure_per_port and exposure != first_exposure:
            rule = (
                f"{_port_label(server, port)} is exposed as {_describe_exposure(first_exposure)} by the older "
                f"ModelServer {first.metadata.namespace}/{first.metadata.name}; this server asks for "
                f"{_describe_exposure(exposure)}, and every Service of a port reaches every server on it: "
                "use another port"
            )
            lost[server.key] = problem(NETWORK_POLICY_VIOLATION, server.key, "spec.service.type", rule)
            continue
        path = prefix_path(server.spec.routing.path)
        winner = holder.setdefault((port, path), server)
        if winner is not server:
            rule = (
                f"{_port_label(server, port)} path {path} is already served by the older ModelServer "
                f"{winner.metadata.namespace}/{winner.metadata.name}"
            )
            lost[server.key] = problem(NETWORK_POLICY_VIOLATION, server.key, "spec.routing.path", rule)
    return lost


def outcome(server: ModelServer, own: Own, conflict: Problem | None, target: Target) -> ServerOutcome:
    ref_problems = own.infer_problems + own.tls.ref_problems + own.auth.ref_problems
    problems = own.tls.ref_problems + own.tls.spec_problems + own.auth.ref_problems + own.auth.spec_problems
    problems += own.extensions.spec_problems
    if conflict is not None:
        problems += (conflict,)
    spec = server.spec
    path = prefix_path(spec.routing.path)
    compiled = not problems
    key = server.key
    backend = ir.Backend(names.backend(key), key, own.endpoints, load_balancing=spec.load_balancing or "leastRequest",
                         adapters=own.adapters) if compiled else None
    timeout = parse_duration_ms(spec.routing.timeout) if spec.routing.timeout is not None else None
    route = None
    if backend is not None:
        route = ir.Route(
            name=names.server_route(key),
            owner=key,
            match=ir.RouteMatch(ir.PathMatch("segment_prefix", path)),
            backends=(ir.WeightedBackend(backend.name, 1),),
            timeout_ms=timeout if timeout is not None else DEFAULT_TIMEOUT_MS,
            retries=spec.routing.retries if spec.routing.retries is not None else DEFAULT_RETRIES,
            auth=(own.auth.value,) if own.auth.value is not None else (),
            extensions=own.extensions.value or (),
        )
    limit = spec.rate_limit
    rate_limit = None
    if compiled and limit is not None and limit.enabled and limit.requests_per_second is not None:
        rate_limit = ir.RateLimit(limit.requests_per_second, limit.burst_size or limit.requests_per_second, limit.global_,
                                  limit.input_tokens_per_unit, limit.output_tokens_per_unit, limit.unit)
    return ServerOutcome(
        key=key,
        server=server,
        port=target.port(spec.service.port),
        path=path,
        problems=problems,
        ref_problems=ref_problems,
        infer_forbidden=own.infer_forbidden,
        backend=backend,
        route=route,
        tls=own.tls.value if compiled else None,
        auth=own.auth.value if compiled else None,
        rate_limit=rate_limit,
        timeout_ms=timeout,
        retries=spec.routing.retries,
        extensions=(own.extensions.value or ()) if compiled else (),
    )
