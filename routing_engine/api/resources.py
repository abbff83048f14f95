"""The five MatrixInfer kinds and the core `Secret`, as immutable pydantic models.

Field names and shapes follow the user's seed documents (`shared/seeds/`); fields marked
(ext) in SPEC.md are optional extensions. Cross-field rules that need only one object live
here (e.g. jwt needs an issuer); rules that need several objects (references, conflicts)
belong to `routing_engine.resolve`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator, model_validator

from routing_engine.api.types import (
    PREFIX_PATH_SCHEMA,
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
    Quantity,
    Replicas,
    ResourceName,
    RoutePath,
    Spec,
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
    """The parts of Kubernetes metadata we read; anything else the API server adds is kept
    out of the way (not rejected), as kubectl-applied objects carry many such fields."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

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

    type: NonEmptyStr
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class Resource(Spec):
    """Common envelope. Subclasses set API_VERSION/KIND and their spec/status types."""

    API_VERSION: ClassVar[str]
    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()

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


class Status(Spec):
    """Status is written by the controller; on input it is accepted loosely and ignored."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


# --- networking.matrixinfer.ai/v1alpha1 -------------------------------------------------


class ObjectRef(Spec):
    name: ResourceName
    namespace: NamespaceName | None = None

    def resolve(self, kind: str, default_namespace: str) -> ObjectKey:
        return ObjectKey(kind, self.namespace or default_namespace, self.name)


class ServiceSpec(Spec):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: Port
    target_port: Port | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class RoutingSpec(Spec):
    path: Annotated[RoutePath, WithJsonSchema(PREFIX_PATH_SCHEMA)]
    timeout: Duration | None = None  # engine default: 60s (SPEC 3.1)
    retries: NonNegativeInt32 | None = None  # engine default: 2, safe failures only (SPEC 3.1)

    @field_validator("path")
    @classmethod
    def _no_wildcard(cls, v: str) -> str:
        if "*" in v:
            raise ValueError(f'"{v}" must be a plain path prefix (no "*")')
        return v


class RateLimitSpec(Spec):
    enabled: StrictBool = False
    requests_per_second: PositiveInt32 | None = None
    burst_size: PositiveInt32 | None = None
    global_: StrictBool = Field(default=False, alias="global")  # (ext) shared across Envoys
    # (ext) OpenAI token budgets per `unit`, counted from responses' `usage`; shared only.
    input_tokens_per_unit: PositiveInt32 | None = None
    output_tokens_per_unit: PositiveInt32 | None = None
    unit: Literal["second", "minute", "hour", "day"] = "minute"

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
    enabled: StrictBool = False
    type: Literal["jwt", "apiKey"] = "jwt"
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_config(self) -> "AuthenticationSpec":
        if not self.enabled:
            return self
        cfg = self.config
        if self.type == "jwt":
            allowed = {"issuer", "audience", "audiences", "jwksUri", "jwksSecretName", "forwardHeader"}
            unknown = sorted(set(cfg) - allowed)
            if unknown:
                raise FieldError(f"config.{unknown[0]}", f"unknown field for type jwt (known: {', '.join(sorted(allowed))})")
            if not isinstance(cfg.get("issuer"), str) or not cfg.get("issuer"):
                raise FieldError("config.issuer", "is required for type jwt")
            if not cfg.get("jwksUri") and not cfg.get("jwksSecretName"):
                raise FieldError("config", "jwksUri or jwksSecretName is required for type jwt (where the keys come from)")
            if cfg.get("jwksUri") and cfg.get("jwksSecretName"):
                raise FieldError("config", "jwksUri and jwksSecretName are mutually exclusive")
            uri = cfg.get("jwksUri")
            if uri is not None and (not isinstance(uri, str) or not uri.startswith(("http://", "https://"))):
                raise FieldError("config.jwksUri", "must be an http(s) URL")
            for field in ("audience", "jwksSecretName"):
                if field in cfg and not isinstance(cfg[field], str):
                    raise FieldError(f"config.{field}", "must be a string")
        else:
            allowed = {"secretName", "header"}
            unknown = sorted(set(cfg) - allowed)
            if unknown:
                raise FieldError(f"config.{unknown[0]}", f"unknown field for type apiKey (known: {', '.join(sorted(allowed))})")
            if not isinstance(cfg.get("secretName"), str) or not cfg.get("secretName"):
                raise FieldError("config.secretName", "is required for type apiKey")
        return self


class TLSSpec(Spec):
    enabled: StrictBool = False
    secret_name: ResourceName | None = None

    @model_validator(mode="after")
    def _needs_secret(self) -> "TLSSpec":
        if self.enabled and not self.secret_name:
            raise FieldError("secretName", "is required when tls is enabled")
        return self


class ModelServerSpec(Spec):
    model_infer_ref: ObjectRef
    service: ServiceSpec
    routing: RoutingSpec
    rate_limit: RateLimitSpec | None = None
    authentication: AuthenticationSpec | None = None
    tls: TLSSpec | None = None


class ModelServer(Resource):
    API_VERSION: ClassVar[str] = "networking.matrixinfer.ai/v1alpha1"
    KIND: ClassVar[str] = "ModelServer"
    PLURAL: ClassVar[str] = "modelservers"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ms",)

    spec: ModelServerSpec
    status: Status | None = None


class RouteMatch(Spec):
    headers: dict[HeaderName, MatchValue] = Field(default_factory=dict)
    query_params: dict[NonEmptyStr, MatchValue] = Field(default_factory=dict)
    path: RoutePath | None = None
    model: NonEmptyStr | None = None  # (ext) OpenAI body field "model"


class Destination(Spec):
    model_server_ref: ObjectRef


class RouteRule(Spec):
    match: RouteMatch = Field(default_factory=RouteMatch)
    destination: Destination
    weight: Percent | None = None
    timeout: Duration | None = None
    retries: NonNegativeInt32 | None = None


class Fallback(Spec):
    model_server_ref: ObjectRef


class TrafficSplit(Spec):
    stable: Percent
    canary: Percent

    @model_validator(mode="after")
    def _sums_to_100(self) -> "TrafficSplit":
        if self.stable + self.canary != 100:
            raise ValueError(f"stable + canary must be 100 (got {self.stable} + {self.canary})")
        return self


class CanaryAnalysis(Spec):
    threshold: Percent
    interval: Duration
    step_weight: Annotated[int, Field(ge=1, le=100, strict=True)] = 10
    max_failures: PositiveInt32 = 2
    min_requests: NonNegativeInt32 = 20


class CanarySpec(Spec):
    enabled: StrictBool = False
    traffic_split: TrafficSplit | None = None
    analysis: CanaryAnalysis | None = None
    # (ext) A request header (e.g. a user id) whose hash picks the variant, so one user
    # stays in one variant across requests and Envoys; requests without it split at random.
    sticky_header: HeaderName | None = None


class ModelRouteSpec(Spec):
    path: Annotated[RoutePath, WithJsonSchema(PREFIX_PATH_SCHEMA)] | None = None  # (ext) front door
    routes: list[RouteRule] = Field(min_length=1)
    fallback: Fallback | None = None
    canary: CanarySpec | None = None

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

    spec: ModelRouteSpec
    status: Status | None = None


# --- workload.matrixinfer.ai/v1alpha1 ---------------------------------------------------



class ResourceRequirements(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class AutoscalingSpec(Spec):
    enabled: StrictBool = False
    min_replicas: PositiveReplicas | None = None
    max_replicas: PositiveReplicas | None = None
    # the spec's (and HPA v1's) spelling, which to_camel would write targetCpu...
    target_cpu_utilization_percentage: Annotated[int, Field(ge=1, le=100, strict=True)] | None = Field(
        default=None, alias="targetCPUUtilizationPercentage"
    )
    metrics: list[dict[str, Any]] = Field(default_factory=list)

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
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(strict=True)] | None = None


class ModelInferSpec(Spec):
    model_ref: ObjectRef
    replicas: Replicas = 1
    autoscaling: AutoscalingSpec | None = None
    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None


class ModelInfer(Resource):
    API_VERSION: ClassVar[str] = "workload.matrixinfer.ai/v1alpha1"
    KIND: ClassVar[str] = "ModelInfer"
    PLURAL: ClassVar[str] = "modelinfers"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mi",)

    spec: ModelInferSpec
    status: Status | None = None


# --- registry.matrixinfer.ai/v1alpha1 ---------------------------------------------------


class ModelSource(Spec):
    uri: NonEmptyStr


class ModelSpecDetails(Spec):
    model_id: NonEmptyStr
    framework: NonEmptyStr
    version: NonEmptyStr
    source: ModelSource


class RuntimeSpec(Spec):
    image: NonEmptyStr
    resources: ResourceRequirements | None = None


class ModelSpec(Spec):
    model_spec: ModelSpecDetails
    runtime: RuntimeSpec | None = None


class Model(Resource):
    API_VERSION: ClassVar[str] = "registry.matrixinfer.ai/v1alpha1"
    KIND: ClassVar[str] = "Model"
    PLURAL: ClassVar[str] = "models"

    spec: ModelSpec
    status: Status | None = None


class TargetRef(Spec):
    api_version: NonEmptyStr
    kind: NonEmptyStr
    name: ResourceName


class AutoscalingPolicySpec(Spec):
    target_ref: TargetRef
    min_replicas: PositiveReplicas | None = None
    max_replicas: PositiveReplicas
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    behavior: dict[str, Any] | None = None

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

    spec: AutoscalingPolicySpec
    status: Status | None = None


# --- v1 Secret (read only) --------------------------------------------------------------


class Secret(Resource):
    """A core/v1 Secret as we read it: `data` is base64, `stringData` is plain text.
    `repr` never shows the values."""

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

    def value(self, key: str) -> bytes | None:
        """The decoded value of `key` (stringData wins, as in Kubernetes), or None."""
        import base64
        import binascii

        if key in self.string_data:
            return self.string_data[key].encode()
        if key in self.data:
            try:
                return base64.b64decode(self.data[key], validate=True)
            except (binascii.Error, ValueError):
                return None
        return None


KINDS: tuple[type[Resource], ...] = (ModelServer, ModelRoute, ModelInfer, Model, AutoscalingPolicy, Secret)
KIND_BY_NAME: dict[str, type[Resource]] = {k.KIND: k for k in KINDS}
