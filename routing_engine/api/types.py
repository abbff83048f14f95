"""Field types shared by every MatrixInfer resource: names, durations, ports, string matches.

Each type validates itself so that an error names the rule that was broken; the loader adds
the resource and field path around it. Durations stay strings on the model (so manifests
round-trip unchanged) and are parsed to milliseconds where the engine needs a number.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from routing_engine.envoy_rules.path import path_problem
from routing_engine.envoy_rules.query import query_problem
from routing_engine.envoy_rules.regex import glob_regex, regex_problem

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
DURATION_PATTERN = r"^((\d+(\.\d+)?)(ms|h|m|s))+$"
# The CRD's form of "a positive duration": at least one part with a non-zero digit. RE2
# (the API server's regex engine) has no lookahead, hence the spelled-out alternatives.
_PART = r"(\d+(\.\d+)?(ms|h|m|s))"
_NONZERO_PART = r"((\d*[1-9]\d*(\.\d+)?|\d+\.\d*[1-9]\d*)(ms|h|m|s))"
POSITIVE_DURATION_PATTERN = rf"^{_PART}*{_NONZERO_PART}{_PART}*$"
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
# About 10 years: far inside protobuf Duration's bound (315,576,000,000 s, 10,000 years)
# and Envoy's millisecond conversions, so Envoy never rejects one.
MAX_DURATION_MS = 315_576_000_000


class FieldError(ValueError):
    """A rule broken by a sub-field that a model validator checks (e.g. `config.issuer` of
    an authentication block). The loader appends `path` to the error's location, so the
    user sees the exact field; pydantic still reports it as an ordinary value error."""

    def __init__(self, path: str | tuple[str | int, ...], rule: str) -> None:
        """`path` is relative to the validated object: dotted ("config.issuer") or, when it
        holds list indexes, a tuple (("routes", 0, "weight"))."""
        self.path: tuple[str | int, ...] = tuple(path.split(".")) if isinstance(path, str) else path
        shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path).lstrip(".")
        super().__init__(f"{shown}: {rule}")
        self.field = shown
        self.rule = rule


@dataclass(frozen=True, slots=True)
class ForPlugin:
    """Marks a ModelServerSpec field whose value belongs to one plugin as it is (in
    `Annotated[..., ForPlugin("name")]`): resolve hands it to the plugin the way it hands
    a `spec.extensions` key (`ir.Route.extensions`), so a built-in per-server filter with
    a first-class field needs no resolve code (docs/adding-a-filter.md)."""

    plugin: str


class Spec(BaseModel):
    """Base of every spec object: camelCase on the wire, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )


@lru_cache(maxsize=1024)
def parse_duration_ms(text: str) -> int:
    """`1m30s` → 90000. Go-style units (h, m, s, ms), as Kubernetes users write them.
    Cached: a world of 10,000 servers writes a handful of distinct durations."""
    pos = 0
    total = 0.0
    for part in _DURATION_PART.finditer(text):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _UNIT_MS[part.group(2)]
        pos = part.end()
    if pos != len(text) or not text:
        hint = f" (use {text}s)" if text.isdigit() else " (use e.g. 500ms, 30s, 1m30s, 1h)"
        raise ValueError(f'"{text}" is not a duration{hint}')
    return int(round(total))


def _check_duration(text: str) -> str:
    ms = parse_duration_ms(text)
    if ms <= 0:
        raise ValueError(f'"{text}" must be a positive duration')
    if ms > MAX_DURATION_MS:
        raise ValueError(f'"{text}" is longer than {MAX_DURATION_MS // 1000}s (about 10 years)')
    return text


def check_dns_subdomain(text: str) -> str:
    if len(text) > 253 or not re.match(DNS1123_SUBDOMAIN, text):
        raise ValueError(
            f'"{text}" is not a DNS-1123 name (lower case letters, digits, "-" and ".", '
            "starting and ending with a letter or digit, at most 253 characters)"
        )
    return text


def _check_dns_label(text: str) -> str:
    if len(text) > 63 or not re.match(DNS1123_LABEL, text):
        raise ValueError(
            f'"{text}" is not a DNS-1123 label (lower case letters, digits and "-", '
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return text


# WithJsonSchema only feeds the CRD generator (routing_engine.api.crd): the same rule in the
# regex dialect the API server understands. Validation itself stays in the Python checks.
Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    WithJsonSchema({"type": "string", "pattern": POSITIVE_DURATION_PATTERN}),
]
ResourceName = Annotated[
    str,
    AfterValidator(check_dns_subdomain),
    WithJsonSchema({"type": "string", "pattern": DNS1123_SUBDOMAIN, "maxLength": 253}),
]
NamespaceName = Annotated[
    str,
    AfterValidator(_check_dns_label),
    WithJsonSchema({"type": "string", "pattern": DNS1123_LABEL, "maxLength": 63}),
]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1, strict=True)]
NonNegativeInt32 = Annotated[int, Field(ge=0, le=2**31 - 1, strict=True)]
PositiveInt32 = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
Percent = Annotated[int, Field(ge=0, le=100, strict=True)]
# A ModelInfer's replica count (and its autoscaling bounds): a thousand GPU replicas of one
# model is beyond any real deployment, and in embedded mode each is a local process, so a
# typo such as 10000000 is refused instead of forking until the machine falls over.
MAX_REPLICAS = 1000
Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS, strict=True)]
PositiveReplicas = Annotated[int, Field(ge=1, le=MAX_REPLICAS, strict=True)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
# An HTTP header name (RFC 9110 token characters), as Envoy accepts one.
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
MAX_HEADER_NAME = 256
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN, max_length=MAX_HEADER_NAME)]


def _shown(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_MAX_SHOWN = 60


def show(value: Any) -> str:
    """A short rendering of user input for messages, in the manifest's own spelling
    (`null`, `true`, `.inf`, strings quoted; containers by kind), never a Python repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**18 else "a huge number"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value) if abs(value) < 1e18 else "a huge number"
    if isinstance(value, str):
        text = value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _check_regex(text: str) -> str:
    """Envoy matches with RE2 and refuses big programs: checked with Envoy's own rules
    (routing_engine.envoy_rules), so a manifest never compiles into a config Envoy NACKs."""
    problem = regex_problem(text)
    if problem is not None:
        raise ValueError(f'"{_shown(text)}" {problem}')
    return text


def _non_empty_prefix(text: str) -> str:
    if not text:
        raise ValueError("a prefix match must not be empty (use present: true to match any value)")
    return text


class StringMatch(Spec):
    """One of exact | prefix | regex | present; a bare string in a manifest means exact.
    A match written as a bare string is dumped as one again, so what a user wrote
    round-trips unchanged."""

    exact: str | None = Field(default=None, description="the value, exactly (case-sensitive)")
    prefix: Annotated[str, AfterValidator(_non_empty_prefix)] | None = Field(
        default=None, description="the value starts with this (not empty)")
    regex: Annotated[str, AfterValidator(_check_regex)] | None = Field(
        default=None, description="the whole value matches this RE2 regular expression (Envoy's dialect)")
    present: StrictBool | None = Field(default=None, description="true: the header or parameter is present, any value")
    _written_as_string: bool = PrivateAttr(default=False)

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> Any:
        return self.exact if self._written_as_string else handler(self)

    @model_validator(mode="after")
    def _exactly_one(self) -> "StringMatch":
        set_fields = [k for k in ("exact", "prefix", "regex", "present") if getattr(self, k) is not None]
        if len(set_fields) != 1:
            raise ValueError(
                "a match needs exactly one of exact, prefix, regex, present"
                + (f" (got {', '.join(set_fields)})" if set_fields else "")
            )
        if self.present is False:
            raise ValueError("present: false is not supported; omit the match instead")
        return self


def _coerce_string_match(value: Any) -> Any:
    if isinstance(value, str):
        match = StringMatch(exact=value)
        match._written_as_string = True
        return match
    if isinstance(value, (dict, StringMatch)):
        return value
    shown = show(value)
    scalar = isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value))
    quote = f'; quote it: "{shown}"' if scalar else ""
    anything = " (to match any value: present: true)" if value is None else ""  # `x: ~`
    raise ValueError(f"{shown} must be a string (exact match{quote}) or a mapping with one of exact, prefix, "
                     f"regex, present{anything}")


# A string or an object: a structural CRD schema cannot say "string or object" (a node
# needs one `type`; x-kubernetes-int-or-string only covers integer|string), so the CRD
# leaves the value untyped with x-kubernetes-preserve-unknown-fields and the loader enforces
# the shape.
MatchValue = Annotated[
    StringMatch,
    BeforeValidator(_coerce_string_match),
    WithJsonSchema(
        {
            "x-kubernetes-preserve-unknown-fields": True,
            "description": "a string (exact match) or one of {exact, prefix, regex, present}",
        }
    ),
]


def _check_query_name(text: str) -> str:
    problem = query_problem(text, name=True)
    if problem is not None:
        raise ValueError(f'"{_shown(text)}" {problem}')
    return text


def _check_query_value(match: StringMatch) -> StringMatch:
    """Exact and prefix values as clients send them (envoy_rules/query.py); a regex is the
    author's own (it may match an encoded form on purpose)."""
    for form in ("exact", "prefix"):
        value = getattr(match, form)
        problem = None if value is None else query_problem(value, name=False)
        if problem is not None:
            rule = f'"{_shown(value)}" {problem}'
            raise ValueError(rule) if match._written_as_string else FieldError(form, rule)
    return match


# Query parameter names and values are compared with the query as sent (undecoded); the
# CRD cannot check a map's keys, nor this "string or object", so the loader does.
QueryParamName = Annotated[NonEmptyStr, AfterValidator(_check_query_name)]
QueryMatchValue = Annotated[MatchValue, AfterValidator(_check_query_value)]


def _check_path(text: str) -> str:
    """Route paths: absolute, no query or fragment, `*` only as a whole trailing segment
    (segment prefix) or inside a segment (glob), in the form Envoy matches (a path its
    normalization would change never matches: envoy_rules/path.py), and not a built-in
    path (`_check_not_builtin`)."""
    if not text.startswith("/"):
        raise ValueError(f'"{text}" must start with "/"')
    if any(c in text for c in "?#") or any(c.isspace() for c in text):
        raise ValueError(f'"{text}" must not contain "?", "#" or white space')
    if not text.isascii() or not text.isprintable():
        # Clients send a URL's path percent-encoded and Envoy matches those bytes; a
        # literal "é" could never match, so ask for the form that does.
        encoded = quote(text, safe="/*%-._~!$&'()+,;=:@[]")
        raise ValueError(f'"{text}" must be ASCII: write it percent-encoded, as clients send it ({encoded})')
    if "//" in text:
        raise ValueError(f'"{text}" must not contain an empty segment "//"')
    problem = path_problem(text)
    if problem is not None:
        raise ValueError(f'"{text}" {problem}')
    if "**" in text:
        raise ValueError(f'"{text}" must not contain "**" (a "*" matches within one segment)')
    if is_glob(text):
        problem = regex_problem(glob_regex(text))
        if problem is not None:
            raise ValueError(f'"{_shown(text)}" is a glob whose regex {problem}')
    if text.endswith("/*"):
        _check_not_builtin(text, text[:-2].rstrip("/") or "/")
    elif not is_glob(text):
        _check_not_builtin(text, text)
    return text


def _check_prefix_path(text: str) -> str:
    """A path-segment prefix (`routing.path`, a front door) takes its own path, with or
    without a trailing "/"."""
    _check_not_builtin(text, text.rstrip("/") or "/")
    return text


# Paths every ModelServer port answers itself, before any route (SPEC 3.1,
# translate/health.py): a route on one of them would never receive its requests. They
# are reserved on every port, also where `/metrics` is left to the routes (a port with
# authentication), so that adding or removing auth elsewhere on a port never takes a
# server's path away.
HEALTH_PATH = "/health"
READY_PATH = "/ready"
METRICS_PATH = "/metrics"
BUILTIN_PATHS = {HEALTH_PATH: "Envoy's liveness check", READY_PATH: "the port's readiness check",
                 METRICS_PATH: "Envoy's Prometheus statistics"}


def _check_not_builtin(text: str, taken: str) -> None:
    """`taken`: the request path the route's own path is (a segment prefix's, an exact path)."""
    if taken in BUILTIN_PATHS:
        what = f'"{text}" is a reserved path' if taken == text else f'"{text}" takes {taken}, a reserved path'
        raise ValueError(f"{what}: every ModelServer port answers it itself ({BUILTIN_PATHS[taken]}) before any "
                         "route; use another path")


def is_glob(path: str) -> bool:
    """A route path with `*` anywhere but as a whole trailing segment (`/a/*`)."""
    head = path[:-2] if path.endswith("/*") else path
    return "*" in head


# The CRD's form of the same rules: printable ASCII but "#", "?" and the characters
# Envoy rewrites (" < > \ ^ ` { | }; space, controls and non-ASCII excluded); a prefix
# path has no "*" (0x2a) either; and not: "//", a dot segment, an escaped unreserved
# character or %00 (envoy_rules/path.py), a built-in path.
_PATH_CHARS = r"\x21\x24-\x3b\x3d\x40-\x5b\x5d\x5f\x61-\x7a\x7e"
_PREFIX_PATH_CHARS = r"\x21\x24-\x29\x2b-\x3b\x3d\x40-\x5b\x5d\x5f\x61-\x7a\x7e"
_NEVER_MATCHED = r"//|(^|/)\.\.?(/|$)|%(00|2[DdEe]|3[0-9]|4[1-9A-Fa-f]|5[0-9AaFf]|6[1-9A-Fa-f]|7[0-9AaEe])"
_BUILTIN = "|".join(p.lstrip("/") for p in BUILTIN_PATHS)
RoutePath = Annotated[
    str,
    AfterValidator(_check_path),
    WithJsonSchema({"type": "string", "pattern": rf"^/[{_PATH_CHARS}]*$",
                    "not": {"pattern": rf"{_NEVER_MATCHED}|\*\*|^/({_BUILTIN})(/\*)?$"}}),
]
PrefixPath = Annotated[
    RoutePath,
    AfterValidator(_check_prefix_path),
    WithJsonSchema({"type": "string", "pattern": rf"^/[{_PREFIX_PATH_CHARS}]*$",
                    "not": {"pattern": rf"{_NEVER_MATCHED}|^/({_BUILTIN})/?$"}}),
]
