"""Validation errors as users read them: one line naming file, document, object, field, rule.

The loader turns every kind of bad input (YAML syntax, wrong shapes, pydantic validation
errors) into `ManifestError`s; the CLI prints them, the providers turn them into
`ValidationFailed` conditions. Pydantic's own messages and locations are rewritten here so
that paths use the camelCase names the user wrote (`spec.routes[0].match.headers.x-user`)
and no message carries a pydantic URL or a Python type name.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from routing_engine.api.resources import ObjectKey
from routing_engine.api.types import FieldError, show

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MAX_RULE = 400


@dataclass(frozen=True, slots=True)
class ManifestError:
    """One broken rule. `index` is the 1-based position of the document in its file (None
    when the whole file is unreadable); `path` is the field path in wire names ("" when the
    rule is about the document as a whole)."""

    file: str
    index: int | None
    kind: str | None
    namespace: str | None
    name: str | None
    path: str
    rule: str

    def __str__(self) -> str:
        where = self.file if self.index is None else f"{self.file}#{self.index}"
        parts = [where]
        if self.kind and self.name:
            parts.append(f"{self.kind} {self.namespace or 'default'}/{self.name}")
        elif self.kind:
            parts.append(self.kind)
        if self.path:
            parts.append(self.path)
        parts.append(self.rule)
        return ": ".join(one_line(p) for p in parts)

    @property
    def object_key(self) -> ObjectKey | None:
        """The object the error belongs to, when the document named one."""
        if self.kind and self.name:
            return ObjectKey(self.kind, self.namespace or "default", self.name)
        return None


def refused_keys(errors: typing.Iterable[ManifestError]) -> frozenset[ObjectKey]:
    """The objects these errors name (`World.refused`): present in their source, but
    invalid. Some may also be in the source's objects at a last good version."""
    return frozenset(key for error in errors if (key := error.object_key) is not None)


def one_line(text: str) -> str:
    """Collapse white space so an error can never span lines (and break `grep`)."""
    return " ".join(text.split())


def format_path(loc: typing.Sequence[str | int]) -> str:
    """`("spec", "routes", 0, "match")` → `spec.routes[0].match`; odd keys are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += "[" + json.dumps(part, ensure_ascii=False) + "]"
    return out


def _unknown_field_rule(root: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    known = _known_fields(root, loc[:-1])
    if not known:
        return "unknown field"
    name = str(loc[-1])
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown field (did you mean {close[0]}?)"
    return f"unknown field (known fields: {', '.join(known)})"


def _known_fields(root: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The wire names allowed at `loc`, found by walking the model's annotations."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next(
                (f for n, f in current.model_fields.items() if (f.alias or n) == part),
                None,
            )
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and `X | None` down to X."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _rule(err: ErrorDetails, *, redact: bool) -> str:
    """Pydantic's error types → our wording, showing the offending input unless `redact`."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    shown = "the value" if redact else show(value)
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        if isinstance(cause, FieldError):
            return cause.rule
        return str(cause) if cause is not None else err["msg"]
    rules: dict[str, str] = {
        "missing": "is required",
        "int_type": f"{shown} must be an integer",
        "int_parsing": f"{shown} must be an integer",
        "int_from_float": f"{shown} must be a whole number",
        "string_type": f"{shown} must be a string",
        "bool_type": f"{shown} must be true or false",
        "bool_parsing": f"{shown} must be true or false",
        "float_type": f"{shown} must be a number",
        "dict_type": f"{shown} must be a mapping",
        "model_type": f"{shown} must be a mapping",
        "model_attributes_type": f"{shown} must be a mapping",
        "list_type": f"{shown} must be a list",
        "greater_than_equal": f"{shown} must be at least {ctx.get('ge')}",
        "greater_than": f"{shown} must be greater than {ctx.get('gt')}",
        "less_than_equal": f"{shown} must be at most {ctx.get('le')}",
        "less_than": f"{shown} must be less than {ctx.get('lt')}",
        "literal_error": f"{shown} must be one of {ctx.get('expected', '').replace(chr(39), '')}",
        "string_too_short": "must not be empty",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
        "string_pattern_mismatch": f"{shown} does not match the pattern {ctx.get('pattern')}",
        "too_short": f"must have at least {ctx.get('min_length')} item(s)",
        "too_long": f"must have at most {ctx.get('max_length')} item(s)",
        "recursion_loop": "contains a reference to itself",
        "string_unicode": f"{shown} must be text",
    }
    return rules.get(kind, err["msg"])


def from_pydantic(
    root: type[BaseModel], err: ErrorDetails, *, prefix: tuple[str | int, ...] = (), redact: bool = False
) -> tuple[str, str]:
    """(field path, rule) for one pydantic error of a document validated as `root`.
    `redact` keeps input values out of the rule (Secrets: errors end up in logs)."""
    loc = tuple(err["loc"])
    rule = _rule(err, redact=redact)
    if len(rule) > _MAX_RULE:  # validators quote the input; a 1 MB value must not become a 1 MB line
        rule = rule[:_MAX_RULE] + "..."
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        rule = f"key {rule}"
    if err["type"] == "extra_forbidden":
        rule = _unknown_field_rule(root, loc)
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, FieldError):
        loc = loc + cause.path
    return format_path(prefix + loc), rule
