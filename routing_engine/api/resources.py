"""The five MatrixInfer kinds and the core `Secret`, as immutable pydantic models.

Field names and shapes follow the user's seed documents (`shared/seeds/`); fields marked
(ext) in SPEC.md are optional extensions. Cross-field rules that need only one object live
here (e.g. jwt needs an issuer); rules that need several objects (references, conflicts)
belong to `routing_engine.resolve`.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from routing_engine.api.quantities import Quantity, requirements_problem
from routing_engine.envoy_rules.uri import parse_jwks_uri
from routing_engine.api.types import (
    HEADER_NAME_PATTERN,
    MAX_HEADER_NAME,
    Duration,
    FieldError,
    HeaderName,
    MatchValue,
    NamespaceName,
    NonEmptyStr,
    NonNegativeInt32,
    Percent,
    Port,
    PositiveInt32,
    PositiveReplicas,
    PrefixPath,
    QueryMatchValue,
    QueryParamName,
    Replicas,
    ResourceName,
    RoutePath,
    Spec,
    check_dns_subdomain,
    show,
)

DEFAULT_NAMESPACE = "default"


class ObjectKey(NamedTuple):
    """Identity of an object: what conditions, owners and errors are keyed by."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class ObjectMeta(BaseModel):
    """The parts of Kubernetes metadata we read. Anything else the API server adds
    (ownerReferences, finalizers, managedFields, ...) is kept as it came, never rejected
    and never lost: an object read, changed and written back (`modelroute.client`) keeps
    it."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)

    name: ResourceName
    namespace: NamespaceName = DEFAULT_NAMESPACE
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    uid: str | None = None
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")


class Condition(Spec):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: NonEmptyStr = Field(description="Condition type: Ready, Progressing, Available, Degraded, Accepted, "
                                          "ResolvedRefs, Programmed, Shadowed")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown")
    reason: str = Field(default="", description="Why, as one word: e.g. ModelNotFound, ValidationFailed, "
                                                "InsufficientResources, NetworkPolicyViolation")
    message: str = Field(default="", description="What happened, for people: names the resource, field and rule")
    last_transition_time: str | None = Field(default=None, description="When the status last changed")
    observed_generation: int | None = Field(default=None, description="The metadata.generation the condition is "
                                                                      "about")


class Resource(Spec):
    """Common envelope. Subclasses set API_VERSION/KIND, their spec/status types and
    DESCRIPTION (the seeds' one-line summary of the kind, for the CRD and OpenAPI)."""

    API_VERSION: ClassVar[str]
    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    DESCRIPTION: ClassVar[str] = ""

    api_version: str
    kind: str
    metadata: ObjectMeta

    @model_validator(mode="before")
    @classmethod
    def _check_type(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if data.get("apiVersion", data.get("api_version")) != cls.API_VERSION:
                raise ValueError(f"apiVersion must be {cls.API_VERSION}")
            if data.get("kind") != cls.KIND:
                raise ValueError(f"kind must be {cls.KIND}")
        return data

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.KIND, self.metadata.namespace, self.metadata.name)

    def manifest(self) -> dict[str, Any]:
        """The object as a manifest, as the user wrote it: only the fields that were set
        (no defaults added), in wire names, JSON types."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class Status(Spec):
    """Status is written by the controller; on input it is accepted loosely and ignored."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


# --- networking.matrixinfer.ai/v1alpha1 -------------------------------------------------


class ObjectRef(Spec):
    """A reference by name; each kind it points to has its own subclass, so the field
    descriptions (the CRDs' `kubectl explain`, the OpenAPI document) name that kind."""

    name: ResourceName
    namespace: NamespaceName | None = None

    def resolve(self, kind: str, default_namespace: str) -> ObjectKey:
        return ObjectKey(kind, self.namespace or default_namespace, self.name)


_SAME_NAMESPACE = ("Defaults to the namespace of this object; another namespace must allow it "
                   "(annotation networking.matrixinfer.ai/allow-from on the referenced object)")


class ModelInferRef(ObjectRef):
    name: ResourceName = Field(description="Name of the ModelInfer resource")
    namespace: NamespaceName | None = Field(default=None, description=f"Namespace of the ModelInfer resource. {_SAME_NAMESPACE}")


class ModelServerRef(ObjectRef):
    name: ResourceName = Field(description="Name of the ModelServer resource")
    namespace: NamespaceName | None = Field(default=None, description=f"Namespace of the ModelServer resource. {_SAME_NAMESPACE}")


class ModelRef(ObjectRef):
    name: ResourceName = Field(description="Name of the Model resource")
    namespace: NamespaceName | None = Field(default=None, description=f"Namespace of the Model resource. {_SAME_NAMESPACE}")


class ServiceSpec(Spec):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type (ClusterIP, NodePort, LoadBalancer). Default ClusterIP")
    port: Port = Field(description="Service port. ModelServers that share a port share one Envoy listener")
    target_port: Port | None = Field(default=None, description="Target port on pods. Defaults to port")
    annotations: dict[str, str] = Field(default_factory=dict, description="Service annotations")


class RoutingSpec(Spec):
    path: PrefixPath = Field(
        description="URL path for the model endpoint: a path-segment prefix (/v1/models/a matches "
                    "/v1/models/a/infer, never /v1/models/ab). Written as Envoy matches it: ASCII (other characters "
                    "percent-encoded, as clients send them), no . or .. segment and no percent-encoded letter, "
                    "digit, -, ., _ or ~ (Envoy normalizes those away); not /health, /ready or /metrics (every "
                    "port answers those itself)")
    timeout: Duration | None = Field(
        default=None, description="Request timeout duration, e.g. 30s or 1m30s (default 60s): the longest the "
                                  "model may take to start answering, or pause while streaming one. A streamed "
                                  "answer that keeps coming is never cut")
    retries: NonNegativeInt32 | None = Field(
        default=None, description="Number of retry attempts (default 2). Only failures that cannot have reached "
                                  "the model are retried (connect failure, refused stream, reset before the "
                                  "request, 503), on another replica, so no GPU work is done twice")

    @field_validator("path")
    @classmethod
    def _no_wildcard(cls, v: str) -> str:
        if "*" in v:
            raise ValueError(f'"{v}" must be a plain path prefix (no "*")')
        return v


class RateLimitSpec(Spec):
    enabled: StrictBool = Field(default=False, description="Enable rate limiting. Over the limit: 429 with "
                                                             "x-ratelimit-* headers")
    requests_per_second: PositiveInt32 | None = Field(
        default=None, description="Requests per second limit (a token bucket refilled at this rate). "
                                  "Required when enabled")
    burst_size: PositiveInt32 | None = Field(
        default=None, description="Burst size for rate limiting: the bucket's capacity (default "
                                  "requestsPerSecond; per-Envoy limits only)")
    global_: StrictBool = Field(
        default=False, alias="global",
        description="(ext) Share the limit across every Envoy through the rate-limit service (Redis) "
                    "instead of one bucket per Envoy")
    input_tokens_per_unit: PositiveInt32 | None = Field(
        default=None, description="(ext) Prompt tokens allowed per unit, counted from the OpenAI usage of "
                                  "answers (streamed ones too). Requires global: true")
    output_tokens_per_unit: PositiveInt32 | None = Field(
        default=None, description="(ext) Completion tokens allowed per unit, counted like inputTokensPerUnit. "
                                  "Requires global: true")
    unit: Literal["second", "minute", "hour", "day"] = Field(
        default="minute", description="(ext) The window of the token limits (second, minute, hour, day). "
                                      "Default minute")

    @model_validator(mode="after")
    def _needs_rate(self) -> "RateLimitSpec":
        if self.enabled and self.requests_per_second is None:
            raise FieldError("requestsPerSecond", "is required when rateLimit is enabled")
        for field, value in (("inputTokensPerUnit", self.input_tokens_per_unit),
                             ("outputTokensPerUnit", self.output_tokens_per_unit)):
            if value is not None and not self.global_:
                raise FieldError(field, "requires global: true (tokens are counted by the shared rate-limit service)")
        return self


class AuthenticationSpec(Spec):
    enabled: StrictBool = Field(default=False, description="Require authentication: requests without valid "
                                                             "credentials get 401 and never reach the model")
    type: Literal["jwt", "apiKey"] = Field(default="jwt", description="Authentication type: jwt (default) or "
                                                                      "(ext) apiKey")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Type-specific settings. jwt: issuer (required), audience or audiences, and the keys from "
                    "jwksUri (an http(s) URL) or jwksSecretName (ext; a Secret with key jwks); tokens must carry "
                    "exp and come in the Authorization: Bearer header. apiKey (ext): secretName (a Secret whose "
                    "values are the keys), header (default x-api-key)")

    @model_validator(mode="after")
    def _check_config(self) -> "AuthenticationSpec":
        """Every rule on `config` that needs no other object, so that `validate` and the
        admission webhook refuse what the engine would (resolve checks these again, in
        `resolve.material`, and must never be the first to)."""
        if not self.enabled:
            return self
        cfg = self.config
        allowed = _AUTH_CONFIG[self.type]
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise FieldError(f"config.{unknown[0]}",
                             f"unknown field for type {self.type} (known: {', '.join(sorted(allowed))})")
        if self.type == "jwt":
            if not isinstance(cfg.get("issuer"), str) or not cfg.get("issuer"):
                raise FieldError("config.issuer", "is required for type jwt")
            if not cfg.get("jwksUri") and not cfg.get("jwksSecretName"):
                raise FieldError("config", "jwksUri or jwksSecretName is required for type jwt (where the keys come from)")
            if cfg.get("jwksUri") and cfg.get("jwksSecretName"):
                raise FieldError("config", "jwksUri and jwksSecretName are mutually exclusive")
            uri = cfg.get("jwksUri")
            if uri is not None:
                parsed = parse_jwks_uri(uri) if isinstance(uri, str) else "must be an http(s) URL"
                if isinstance(parsed, str):
                    raise FieldError("config.jwksUri", parsed)
            if "audience" in cfg:
                _non_empty_text(cfg, "audience")
            audiences = cfg.get("audiences", [])
            if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
                raise FieldError("config.audiences", f"{show(audiences)} must be a list of non-empty strings")
            forward = cfg.get("forwardHeader", False)
            if not isinstance(forward, bool):
                raise FieldError("config.forwardHeader", f"{show(forward)} must be true or false")
            if "jwksSecretName" in cfg:
                _secret_name(cfg, "jwksSecretName")
        else:
            if not isinstance(cfg.get("secretName"), str) or not cfg.get("secretName"):
                raise FieldError("config.secretName", "is required for type apiKey")
            _secret_name(cfg, "secretName")
            if "header" in cfg:
                header = _non_empty_text(cfg, "header")
                if len(header) > MAX_HEADER_NAME or not re.match(HEADER_NAME_PATTERN, header):
                    raise FieldError("config.header", f"{show(header)} is not an HTTP header name (letters, digits "
                                                      f"and !#$%&'*+-.^_`|~, at most {MAX_HEADER_NAME} characters)")
        return self


_AUTH_CONFIG = {
    "jwt": frozenset({"issuer", "audience", "audiences", "jwksUri", "jwksSecretName", "forwardHeader"}),
    "apiKey": frozenset({"secretName", "header"}),
}


def _non_empty_text(cfg: dict[str, Any], field: str) -> str:
    value = cfg[field]
    if not isinstance(value, str) or not value:
        raise FieldError(f"config.{field}", f"{show(value)} must be a non-empty string")
    return value


def _secret_name(cfg: dict[str, Any], field: str) -> None:
    """A Secret's name is a DNS-1123 subdomain: anything else could never be found."""
    name = _non_empty_text(cfg, field)
    try:
        check_dns_subdomain(name)
    except ValueError as err:
        raise FieldError(f"config.{field}", str(err)) from None


class TLSSpec(Spec):
    enabled: StrictBool = Field(default=False, description="Serve HTTPS on this server's port")
    secret_name: ResourceName | None = Field(
        default=None, description="The Secret with the certificate (tls.crt, tls.key); rotating it rotates the "
                                  "certificate without dropping connections. Required when enabled")

    @model_validator(mode="after")
    def _needs_secret(self) -> "TLSSpec":
        if self.enabled and not self.secret_name:
            raise FieldError("secretName", "is required when tls is enabled")
        return self


LOAD_BALANCING = ("leastRequest", "loadAware", "prefixAffinity")
LoadBalancing = Literal["leastRequest", "loadAware", "prefixAffinity"]


class ModelServerSpec(Spec):
    model_infer_ref: ModelInferRef = Field(description="The ModelInfer whose ready replicas serve this server")
    service: ServiceSpec = Field(description="The network service: type, port, target port, annotations")
    routing: RoutingSpec = Field(description="Routing: the URL path, request timeout and retries")
    rate_limit: RateLimitSpec | None = Field(default=None, description="Rate limiting of requests to this server")
    authentication: AuthenticationSpec | None = Field(default=None, description="Authentication of requests "
                                                                                "(jwt, or (ext) apiKey)")
    tls: TLSSpec | None = Field(default=None, description="HTTPS on this server's port")
    load_balancing: LoadBalancing | None = Field(
        default=None, description="(ext) How a request picks a replica: leastRequest (default: the replica with "
                                  "the fewest requests in flight), loadAware (least request weighted by each "
                                  "replica's measured speed, queue and KV-cache use, read from its metrics), "
                                  "prefixAffinity (requests whose prompts start alike go to the same replica, to "
                                  "reuse its prefix cache, within 1.5x the average load)")
    extensions: dict[str, Any] = Field(
        default_factory=dict, description="(ext) Settings owned by plugins, one key per plugin (its name, e.g. "
                                          "cors): each installed plugin validates its own key; a key no installed "
                                          "plugin owns, or a value its plugin refuses, keeps the server from being "
                                          "served")


_STATUS = "Status written by the controller; read only"


class ModelServer(Resource):
    API_VERSION: ClassVar[str] = "networking.matrixinfer.ai/v1alpha1"
    KIND: ClassVar[str] = "ModelServer"
    PLURAL: ClassVar[str] = "modelservers"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ms",)
    DESCRIPTION: ClassVar[str] = "Exposes models through network services with routing and security policies"

    spec: ModelServerSpec = Field(description="The desired state of the ModelServer")
    status: Status | None = Field(default=None, description=_STATUS)


class RouteMatch(Spec):
    headers: dict[HeaderName, MatchValue] = Field(
        default_factory=dict, description="Request headers to match, all of them: a string is an exact match; "
                                          "(ext) or one of exact, prefix, regex, present")
    query_params: dict[QueryParamName, QueryMatchValue] = Field(
        default_factory=dict, description="Query parameters to match, in the same forms. Names and values are "
                                          "compared as clients send them: percent-encoded (v2%20beta), undecoded")
    path: RoutePath | None = Field(
        default=None, description='The request path: "/a/b" exact, "/a/b/*" the segment prefix /a/b, any other '
                                  '"*" a glob within one segment. Default: the route\'s front door')
    model: NonEmptyStr | None = Field(
        default=None, description='(ext) The "model" field of an OpenAI JSON request body, exactly')


class Destination(Spec):
    model_server_ref: ModelServerRef = Field(description="The ModelServer that receives the matched requests")


class RouteRule(Spec):
    match: RouteMatch = Field(default_factory=RouteMatch,
                              description="What requests this entry takes; entries with identical match form one "
                                          "group that splits traffic by weight. Empty: every request of the front "
                                          "door")
    destination: Destination = Field(description="Where the matched requests go")
    weight: Percent | None = Field(
        default=None, description="Share of the group's traffic, 0-100, normalized over the group. Missing "
                                  "weights share what the others leave of 100 equally; all 0 is invalid")
    timeout: Duration | None = Field(default=None, description="Request timeout; overrides the destination's "
                                                               "routing.timeout")
    retries: NonNegativeInt32 | None = Field(default=None, description="Retry attempts; override the "
                                                                       "destination's routing.retries")


class Fallback(Spec):
    model_server_ref: ModelServerRef = Field(
        description="Receives requests no entry matches, and fails over a destination that has no healthy replica")


class TrafficSplit(Spec):
    stable: Percent = Field(description="Starting weight of the stable (first) destination, in percent")
    canary: Percent = Field(description="Starting weight of the canary (second) destination; stable + canary = 100")

    @model_validator(mode="after")
    def _sums_to_100(self) -> "TrafficSplit":
        if self.stable + self.canary != 100:
            raise ValueError(f"stable + canary must be 100 (got {self.stable} + {self.canary})")
        return self


class CanaryAnalysis(Spec):
    threshold: Percent = Field(description="Minimum success rate (non-5xx share) in percent the canary must hold")
    interval: Duration = Field(description='Evaluation period, e.g. "5m"')
    step_weight: Annotated[int, Field(ge=1, le=100, strict=True)] = Field(
        default=10, description="(ext) Weight the canary gains after each passed interval. Default 10")
    max_failures: PositiveInt32 = Field(default=2, description="(ext) Failed intervals before rollback. Default 2")
    min_requests: NonNegativeInt32 = Field(default=20, description="(ext) Requests an interval needs for a verdict; "
                                                                   "fewer: it is held. Default 20")


class CanarySpec(Spec):
    enabled: StrictBool = Field(
        default=False, description="Run a canary rollout on the route's group with exactly two destinations: the "
                                   "first written is stable, the second canary")
    traffic_split: TrafficSplit | None = Field(default=None, description="The starting split")
    analysis: CanaryAnalysis | None = Field(default=None, description="How the canary is judged and moved")
    sticky_header: HeaderName | None = Field(
        default=None, description="(ext) A request header (e.g. a user id) whose hash picks the variant, so one "
                                  "user stays in one variant across requests and Envoys")


class ModelRouteSpec(Spec):
    path: PrefixPath | None = Field(
        default=None, description="(ext) The front door: the path prefix this route governs. Default: the "
                                  "routing.path of the fallback's ModelServer, else of the first destination's")
    routes: list[RouteRule] = Field(min_length=1, description="Match and destination entries, tried in the order "
                                                              "written; the first group that matches wins")
    fallback: Fallback | None = Field(default=None, description="Where unmatched requests go, and failover target")
    canary: CanarySpec | None = Field(default=None, description="Canary rollout of one two-destination group")

    @field_validator("path")
    @classmethod
    def _no_wildcard(cls, v: str | None) -> str | None:
        if v is not None and "*" in v:
            raise ValueError(f'"{v}" must be a plain path prefix (no "*")')
        return v

    @model_validator(mode="after")
    def _groups(self) -> "ModelRouteSpec":
        """SPEC 3.3/3.4 on the route alone: no group whose weights are all 0, and a canary
        needs exactly one group of exactly two entries. Groups are found with the engine's
        own rule (`routing_engine.resolve.matching`); when that needs the front door and it
        is not written here (no `path`, an entry matching a segment prefix), the check is
        left to the engine, which reports the same rule as a condition."""
        groups = self.groups()
        if groups is None:
            return self
        for entries in groups:
            if all(self.routes[i].weight == 0 for i in entries):
                fields = ", ".join(f"spec.routes[{i}]" for i in entries)
                raise FieldError(("routes", entries[0], "weight"),
                                 f"the weights of one group ({fields}) are all 0; at least one must be positive")
        if self.canary is not None and self.canary.enabled:
            pairs = sum(1 for entries in groups if len(entries) == 2)
            if pairs != 1:
                raise FieldError("canary", "canary needs exactly one group (entries with identical match) with "
                                           f"exactly two destinations, stable then canary; found {pairs}")
        return self

    def groups(self) -> list[list[int]] | None:
        """Indexes of `routes` by group, in written order; None when grouping depends on a
        front door this spec does not name."""
        from routing_engine.resolve.matching import route_match  # the engine's rule; imports this module

        if self.path is None and any(r.match.path is not None and r.match.path.endswith("/*") for r in self.routes):
            return None
        front_door = self.path if self.path is not None else "/"
        by_match: dict[object, list[int]] = {}
        for i, rule in enumerate(self.routes):
            by_match.setdefault(route_match(rule.match, front_door), []).append(i)
        return list(by_match.values())


class ModelRoute(Resource):
    API_VERSION: ClassVar[str] = "networking.matrixinfer.ai/v1alpha1"
    KIND: ClassVar[str] = "ModelRoute"
    PLURAL: ClassVar[str] = "modelroutes"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mr",)
    DESCRIPTION: ClassVar[str] = "Defines advanced routing rules for traffic management and A/B testing"

    spec: ModelRouteSpec = Field(description="The desired state of the ModelRoute")
    status: Status | None = Field(default=None, description=_STATUS)

    @model_validator(mode="after")
    def _canary_servers(self) -> "ModelRoute":
        """SPEC 3.4 on the route alone: the canary group's two destinations are two
        ModelServers. Here, not on the spec: `{name: a}` and `{name: a, namespace: ns}`
        are one server exactly when ns is this route's namespace."""
        if self.spec.canary is None or not self.spec.canary.enabled:
            return self
        pairs = [entries for entries in self.spec.groups() or () if len(entries) == 2]
        if len(pairs) == 1:
            same = self.same_server_canary(*pairs[0])
            if same is not None:
                raise same
        return self

    def same_server_canary(self, stable: int, canary: int) -> FieldError | None:
        """The error when the canary group's entries `stable` and `canary` send to one
        ModelServer: that is no canary (nothing to compare, and the weights would only
        add up). The engine asks it too, for the groups it finds with the front door."""
        namespace = self.metadata.namespace
        first, second = (self.spec.routes[i].destination.model_server_ref.resolve(ModelServer.KIND, namespace)
                         for i in (stable, canary))
        if first != second:
            return None
        return FieldError(("spec", "routes", canary, "destination", "modelServerRef"),
                          f"the canary destination is {second}, as is the stable one (spec.routes[{stable}]); a "
                          "canary needs two different ModelServers, stable then canary")


# --- workload.matrixinfer.ai/v1alpha1 ---------------------------------------------------


class ResourceRequirements(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    requests: dict[str, Quantity] = Field(default_factory=dict, description='Resources each replica is guaranteed '
                                                                            '(memory, cpu, nvidia.com/gpu), e.g. "2Gi"')
    limits: dict[str, Quantity] = Field(default_factory=dict, description="The most each replica may use; GPUs "
                                                                          "and other extended resources: request = "
                                                                          "limit")

    @model_validator(mode="after")
    def _as_kubernetes_checks(self) -> "ResourceRequirements":
        """What the API server would refuse in a container's resources (routing_engine.api.quantities)."""
        problem = requirements_problem(self.requests, self.limits)
        if problem is not None:
            raise FieldError(*problem)
        return self


class AutoscalingSpec(Spec):
    enabled: StrictBool = Field(default=False, description="Scale the replicas with a HorizontalPodAutoscaler")
    min_replicas: PositiveReplicas | None = Field(default=None, description="Fewest replicas (default 1)")
    max_replicas: PositiveReplicas | None = Field(default=None, description="Most replicas (at most 1000). "
                                                                            "Required when enabled")
    # the spec's (and HPA v1's) spelling, which to_camel would write targetCpu...
    target_cpu_utilization_percentage: Annotated[int, Field(ge=1, le=100, strict=True)] | None = Field(
        default=None, alias="targetCPUUtilizationPercentage",
        description="Average CPU utilization, in percent of the request, the autoscaler aims for"
    )
    metrics: list[dict[str, Any]] = Field(default_factory=list, description="Metrics to scale on, in the "
                                                                            "autoscaling/v2 MetricSpec shape")

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingSpec":
        if self.min_replicas and self.max_replicas and self.min_replicas > self.max_replicas:
            raise FieldError(
                "minReplicas", f"{self.min_replicas} must not exceed maxReplicas ({self.max_replicas})"
            )
        if self.enabled and self.max_replicas is None:
            raise FieldError("maxReplicas", "is required when autoscaling is enabled")
        return self


class Toleration(Spec):
    key: str | None = Field(default=None, description="The taint key the toleration applies to; empty with "
                                                      "operator Exists: every taint")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (default)")
    value: str | None = Field(default=None, description="The taint value, for operator Equal")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect to tolerate; empty: every effect")
    toleration_seconds: Annotated[int, Field(strict=True)] | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound after the taint appears")


class LoraAdapter(Spec):
    name: NonEmptyStr = Field(description='The adapter\'s name: what a request puts in its "model" field to use it')
    uri: NonEmptyStr | None = Field(default=None, description="Where the adapter's weights are, e.g. s3://bucket/path "
                                                              "or hf://org/name (passed to the replicas)")


class ModelInferSpec(Spec):
    model_ref: ModelRef = Field(description="The Model (registry) this inference deployment serves")
    replicas: Replicas = Field(default=1, description="Number of replicas, 0-1000. Default 1")
    autoscaling: AutoscalingSpec | None = Field(default=None, description="Scale the replicas automatically")
    resources: ResourceRequirements | None = Field(default=None, description="Resource requirements of each "
                                                                             "replica (requests, limits)")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels a replica's node must "
                                                                            "have")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the replicas tolerate")
    affinity: dict[str, Any] | None = Field(default=None, description="Scheduling affinity (the Kubernetes "
                                                                      "Affinity shape)")
    adapters: list[LoraAdapter] = Field(
        default_factory=list, description="(ext) LoRA adapters the replicas load. A request whose model names one "
                                          "goes only to replicas that report it loaded (GET /v1/models), with the "
                                          "policies of the ModelServers serving this ModelInfer")

    @field_validator("adapters")
    @classmethod
    def _unique_adapters(cls, adapters: list[LoraAdapter]) -> list[LoraAdapter]:
        seen: set[str] = set()
        for i, adapter in enumerate(adapters):
            if adapter.name in seen:
                raise FieldError((i, "name"), f'"{adapter.name}" is listed twice')
            seen.add(adapter.name)
        return adapters


class ModelInfer(Resource):
    API_VERSION: ClassVar[str] = "workload.matrixinfer.ai/v1alpha1"
    KIND: ClassVar[str] = "ModelInfer"
    PLURAL: ClassVar[str] = "modelinfers"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mi",)
    DESCRIPTION: ClassVar[str] = "Represents an inference deployment with scaling and resource specifications"

    spec: ModelInferSpec = Field(description="The desired state of the ModelInfer")
    status: Status | None = Field(default=None, description=_STATUS)


# --- registry.matrixinfer.ai/v1alpha1 ---------------------------------------------------


class ModelSource(Spec):
    uri: NonEmptyStr = Field(description="Where the model's weights are, e.g. s3://bucket/path or hf://org/name")


class ModelSpecDetails(Spec):
    model_id: NonEmptyStr = Field(description="The model's identifier, e.g. meta-llama/Llama-2-7b")
    framework: NonEmptyStr = Field(description="The framework the model runs on, e.g. pytorch or vllm")
    version: NonEmptyStr = Field(description="The model's version")
    source: ModelSource = Field(description="Where the model comes from")


class RuntimeSpec(Spec):
    image: NonEmptyStr = Field(description="The container image that serves the model")
    resources: ResourceRequirements | None = Field(default=None, description="Resource requirements of the runtime")


class ModelSpec(Spec):
    model_spec: ModelSpecDetails = Field(description="The model's metadata and source")
    runtime: RuntimeSpec | None = Field(default=None, description="Runtime requirements")


class Model(Resource):
    API_VERSION: ClassVar[str] = "registry.matrixinfer.ai/v1alpha1"
    KIND: ClassVar[str] = "Model"
    PLURAL: ClassVar[str] = "models"
    DESCRIPTION: ClassVar[str] = "Represents an AI model with metadata, specifications, and runtime requirements"

    spec: ModelSpec = Field(description="The desired state of the Model")
    status: Status | None = Field(default=None, description=_STATUS)


class TargetRef(Spec):
    api_version: NonEmptyStr = Field(description="API version of the scaled resource, e.g. "
                                                 "workload.matrixinfer.ai/v1alpha1")
    kind: NonEmptyStr = Field(description="Kind of the scaled resource, e.g. ModelInfer")
    name: ResourceName = Field(description="Name of the scaled resource (same namespace)")


class AutoscalingPolicySpec(Spec):
    target_ref: TargetRef = Field(description="The resource this policy scales")
    min_replicas: PositiveReplicas | None = Field(default=None, description="Fewest replicas (default 1)")
    max_replicas: PositiveReplicas = Field(description="Most replicas (at most 1000)")
    metrics: list[dict[str, Any]] = Field(default_factory=list, description="Metrics to scale on, in the "
                                                                            "autoscaling/v2 MetricSpec shape")
    behavior: dict[str, Any] | None = Field(default=None, description="Scaling behavior (scaleUp, scaleDown), in "
                                                                      "the autoscaling/v2 shape")

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingPolicySpec":
        if self.min_replicas and self.min_replicas > self.max_replicas:
            raise FieldError(
                "minReplicas", f"{self.min_replicas} must not exceed maxReplicas ({self.max_replicas})"
            )
        return self


class AutoscalingPolicy(Resource):
    API_VERSION: ClassVar[str] = "registry.matrixinfer.ai/v1alpha1"
    KIND: ClassVar[str] = "AutoscalingPolicy"
    PLURAL: ClassVar[str] = "autoscalingpolicies"
    DESCRIPTION: ClassVar[str] = "Defines scaling policies and strategies for models"

    spec: AutoscalingPolicySpec = Field(description="The desired state of the AutoscalingPolicy")
    status: Status | None = Field(default=None, description=_STATUS)


# --- v1 Secret (read only) --------------------------------------------------------------


class Secret(Resource):
    """A core/v1 Secret as we read it: `data` is base64, `stringData` is plain text.
    `repr` never shows the values. Keys and `data` values are checked as the API server
    checks them (a manifest it would refuse is refused here too, naming the key)."""

    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Secret"
    PLURAL: ClassVar[str] = "secrets"

    model_config = ConfigDict(
        alias_generator=Spec.model_config["alias_generator"],
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict, repr=False)
    string_data: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("data")
    @classmethod
    def _base64(cls, data: dict[str, str]) -> dict[str, str]:
        for key in sorted(data):
            _check_secret_key(key)
            if decode_secret_data(data[key]) is None:
                raise FieldError((key,), "is not base64 (the standard alphabet, with = padding), which the API "
                                         "server refuses; write plain text under stringData instead")
        return data

    @field_validator("string_data")
    @classmethod
    def _keys(cls, data: dict[str, str]) -> dict[str, str]:
        for key in sorted(data):
            _check_secret_key(key)
        return data

    def value(self, key: str) -> bytes | None:
        """The decoded value of `key` (stringData wins, as in Kubernetes), or None."""
        if key in self.string_data:
            return self.string_data[key].encode()
        if key in self.data:
            return decode_secret_data(self.data[key])
        return None


_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _check_secret_key(key: str) -> None:
    """The API server's rule for Secret and ConfigMap keys (IsConfigMapKey): they become
    file names in a volume."""
    if len(key) > 253 or not _SECRET_KEY.match(key):
        raise FieldError((key,), "key must be at most 253 letters, digits, '-', '_' or '.'")
    if key in (".", "..") or key.startswith(".."):
        raise FieldError((key,), "key must not be '.' or '..' or start with '..'")


def decode_secret_data(text: str) -> bytes | None:
    """A `data` value as the API server decodes it (Go's standard base64, which skips
    line breaks: a PEM pasted as folded base64 is fine), or None when it refuses it."""
    try:
        return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return None


KINDS: tuple[type[Resource], ...] = (ModelServer, ModelRoute, ModelInfer, Model, AutoscalingPolicy, Secret)
KIND_BY_NAME: dict[str, type[Resource]] = {k.KIND: k for k in KINDS}
