"""Field types shared by every MatrixInfer resource: names, durations, ports, string matches.

Each type validates itself so that an error names the rule that was broken; the loader adds
the resource and field path around it. Durations stay strings on the model (so manifests
round-trip unchanged) and are parsed to milliseconds where the engine needs a number.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
DURATION_PATTERN = r"^((\d+(\.\d+)?)(ms|h|m|s))+$"
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
MAX_DURATION_MS = 315_576_000_000  # protobuf Duration's bound, so Envoy never rejects one


class Spec(BaseModel):
    """Base of every spec object: camelCase on the wire, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
    )


def parse_duration_ms(text: str) -> int:
    """`1m30s` → 90000. Go-style units (h, m, s, ms), as Kubernetes users write them."""
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
        raise ValueError(f'"{text}" is longer than 10000 years')
    return text


def _check_dns_subdomain(text: str) -> str:
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


Duration = Annotated[str, AfterValidator(_check_duration)]
ResourceName = Annotated[str, AfterValidator(_check_dns_subdomain)]
NamespaceName = Annotated[str, AfterValidator(_check_dns_label)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1, strict=True)]
NonNegativeInt32 = Annotated[int, Field(ge=0, le=2**31 - 1, strict=True)]
PositiveInt32 = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
Percent = Annotated[int, Field(ge=0, le=100, strict=True)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$", max_length=256)]


def _check_regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as err:
        raise ValueError(f'"{text}" is not a valid regular expression: {err}') from None
    return text


class StringMatch(Spec):
    """One of exact | prefix | regex | present; a bare string in a manifest means exact."""

    exact: str | None = None
    prefix: str | None = None
    regex: Annotated[str, AfterValidator(_check_regex)] | None = None
    present: bool | None = None

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
        return StringMatch(exact=value)
    return value


MatchValue = Annotated[StringMatch, BeforeValidator(_coerce_string_match)]


def _check_path(text: str) -> str:
    """Route paths: absolute, no query or fragment, `*` only as a whole trailing segment
    (segment prefix) or inside a segment (glob)."""
    if not text.startswith("/"):
        raise ValueError(f'"{text}" must start with "/"')
    if any(c in text for c in "?#") or any(c.isspace() for c in text):
        raise ValueError(f'"{text}" must not contain "?", "#" or white space')
    if "//" in text:
        raise ValueError(f'"{text}" must not contain an empty segment "//"')
    if "**" in text:
        raise ValueError(f'"{text}" must not contain "**" (a "*" matches within one segment)')
    return text


RoutePath = Annotated[str, AfterValidator(_check_path)]
