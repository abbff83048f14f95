"""Intermediate representation between `resolve` (manifests → what to serve) and
`translate` (what to serve → Envoy protos).

Everything here is a frozen dataclass of tuples and scalars, so IR objects are hashable:
translate memoizes serialized protos by IR object, which is what makes a one-route edit
cheap in a world of 10,000 routes. The IR knows Envoy concepts (listener, route, cluster)
but no proto types and no Kubernetes types; resource names are decided by `names`.

Units: durations in milliseconds, weights as given (translate normalizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from routing_engine.api.resources import ObjectKey

# --- matches ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: Literal["exact", "prefix", "regex", "present"]
    value: str = ""


@dataclass(frozen=True, slots=True)
class PathMatch:
    """`segment_prefix` matches the path and everything below it by whole segments
    (`/a` matches `/a`, `/a/`, `/a/b`, never `/ab`); `glob` has `*` inside segments and
    matches one path exactly (`*` = any run of characters except `/`)."""

    kind: Literal["exact", "segment_prefix", "glob"]
    value: str


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path: PathMatch
    headers: tuple[tuple[str, StringMatch], ...] = ()
    query_params: tuple[tuple[str, StringMatch], ...] = ()
    model: str | None = None  # OpenAI request body field "model", exact


# --- policies -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket owned by one ModelServer (SPEC 3.1): every route that can send to the
    server draws from the same bucket on a given Envoy (or, with `shared`, across Envoys)."""

    requests_per_second: int
    burst: int
    shared: bool = False  # rateLimit.global (ext): the Redis-backed rate limit service
    # (ext) token budgets per `token_unit`, enforced by the shared service only
    input_tokens: int | None = None
    output_tokens: int | None = None
    token_unit: Literal["second", "minute", "hour", "day"] = "minute"


@dataclass(frozen=True, slots=True)
class SharedLimit:
    """One row of the shared rate-limit service's table: requests Envoy sends to `cluster`
    (a server's own cluster, or a failover pair's from it) draw from the shared limit of
    the ModelServer `server` (`routing_engine.rate_limits`)."""

    cluster: str
    server: ObjectKey
    limit: RateLimit


@dataclass(frozen=True, slots=True)
class JwtProvider:
    """One issuer's JWT requirements. Keys come from `jwks_uri` (fetched by Envoy through
    the cluster `jwks_cluster`) or inline from a Secret (`jwks_inline`)."""

    name: str  # provider name, unique per world: derived from the owning ModelServer
    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_uri: str | None = None
    jwks_inline: str | None = field(default=None, repr=False)
    forward_header: bool = False


@dataclass(frozen=True, slots=True)
class ApiKeyAuth:
    """(ext) Requests must carry one of `keys` in `header` (default `x-api-key`). Keys are
    secret material: never repr'd."""

    name: str
    header: str
    keys: tuple[str, ...] = field(repr=False, default=())


AuthPolicy = JwtProvider | ApiKeyAuth


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    """A certificate served by SDS under `name`. Material is secret: never repr'd."""

    name: str
    cert_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Extension:
    """One ModelServer's `spec.extensions.<plugin>`, as the plugin's model parsed it
    (`value`, the model instance). Compared and hashed by `canonical` (the value as JSON,
    fields in the model's order), so IR objects stay hashable whatever the model holds."""

    plugin: str
    server: ObjectKey
    canonical: str
    value: Any = field(compare=False, hash=False, repr=False)


def extensions_of(extensions: tuple[Extension, ...], plugin: str) -> tuple[Extension, ...]:
    return tuple(e for e in extensions if e.plugin == plugin)


# --- routes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    backend: str  # Backend.name
    weight: int
    # With a ModelRoute fallback: fail over to this backend when `backend` has no healthy
    # endpoint (translate builds a cluster for the pair: translate/cluster.py).
    failover_to: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """One Envoy route: a group of SPEC 3.3 (or a ModelServer's own route)."""

    name: str  # unique within its listener, stable across compiles
    owner: ObjectKey  # the ModelRoute or ModelServer this route comes from
    match: RouteMatch
    backends: tuple[WeightedBackend, ...]
    timeout_ms: int
    retries: int
    auth: tuple[AuthPolicy, ...] = ()  # all must pass (requires_all)
    hash_header: str | None = None  # sticky variant assignment (ext), issue 7
    # --- inference-aware routing (issue 18) ---
    # The LoRA adapter this route's requests name: only endpoints that load it serve them.
    adapter: str | None = None
    # Set on a route resolve added for one adapter of its backends, in front of the route
    # of this name (same policies, `match.model` = the adapter).
    derived_from: str | None = None
    # Pick the endpoint by a hash of the prompt's prefix (a backend is prefixAffinity).
    prefix_hash: bool = False
    # The plugins' `spec.extensions` of every ModelServer whose policies apply here, as for
    # `auth`: the servers it can send to and those owning the path it matches; sorted by
    # (plugin, server). How values of several servers combine is the plugin's rule.
    extensions: tuple[Extension, ...] = ()

    def extension(self, plugin: str) -> tuple[Extension, ...]:
        """This route's values of one plugin's key, one per server that sets it."""
        return extensions_of(self.extensions, plugin)


# --- listeners ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listener:
    """One port. Routes are in match order (first wins). `ready_backends` are the backends
    whose health decides `GET /ready` on this port."""

    name: str
    address: str
    port: int
    routes: tuple[Route, ...]
    tls: TlsCertificate | None = None
    ready_backends: tuple[str, ...] = ()
    # Rate limits of the servers reachable through this listener, by Backend.name.
    rate_limits: tuple[tuple[str, RateLimit], ...] = ()
    # The plugins' `spec.extensions` of the ModelServers on this port, sorted by (plugin, server).
    extensions: tuple[Extension, ...] = ()

    def extension(self, plugin: str) -> tuple[Extension, ...]:
        """This port's values of one plugin's key, one per server on it that sets it."""
        return extensions_of(self.extensions, plugin)


# --- backends -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    healthy: bool = True
    adapters: tuple[str, ...] = ()  # the LoRA adapters it has loaded (declared ones only), sorted
    weight: int | None = None  # loadAware: its weight for least request (None: equal)


LoadBalancing = Literal["leastRequest", "loadAware", "prefixAffinity"]


@dataclass(frozen=True, slots=True)
class Backend:
    """One ModelServer's upstream: a cluster (least request, outlier detection; or a
    consistent hash for prefixAffinity) and its endpoints (the ready replicas of its
    ModelInfer on targetPort). With `adapters` (its ModelInfer's declared LoRA adapters)
    the cluster can pick among the endpoints that load one."""

    name: str
    owner: ObjectKey
    endpoints: tuple[Endpoint, ...] = ()
    connect_timeout_ms: int = 5_000
    load_balancing: LoadBalancing = "leastRequest"
    adapters: tuple[str, ...] = ()


# --- the whole --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything one Envoy (or one scope of sidecars) should serve. `shared_limits` is
    not translated: it is what the shared rate-limit service must enforce for these
    listeners (every cluster their shared-limit descriptors can name), sorted by cluster."""

    listeners: tuple[Listener, ...]
    backends: tuple[Backend, ...]
    shared_limits: tuple[SharedLimit, ...] = ()
