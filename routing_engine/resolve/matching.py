"""From manifest matches to IR matches, in one normal form.

The normal form is what makes "identical match" (SPEC 3.3 groups) and "covers"
(shadowing) decidable by comparing values:
- prefix paths (`routing.path`, `spec.path`, `match.path` ending in `/*`) lose a
  trailing `/`, so `/v1/a/` and `/v1/a` are one segment prefix (the root stays `/`);
- header names are lower-cased (HTTP header names are case-insensitive; Envoy compares
  them lower-cased) and header and query matches are sorted by name;
- `host` is `:authority`: Envoy keeps an HTTP/1 Host header as HTTP/2's `:authority`
  and never as `host`, so a match on `host` could otherwise never match (the listener
  strips the port from it first, translate/listener.py);
- a bare string in a manifest is an exact match.
"""

from __future__ import annotations

from routing_engine import ir
from routing_engine.api.resources import RouteMatch
from routing_engine.api.types import StringMatch


def prefix_path(path: str) -> str:
    """A prefix path in normal form: no trailing `/` except for the root."""
    stripped = path.rstrip("/")
    return stripped or "/"


def segments(path: str) -> tuple[str, ...]:
    """`/a/b` → ("a", "b"); `/` → ()."""
    return tuple(part for part in path.split("/") if part)


def is_under(path: str, prefix: str) -> bool:
    """Is `path` matched by the segment prefix `prefix` (both in normal form)?"""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def path_match(path: str) -> ir.PathMatch:
    """SPEC 2 `match.path`: `/a/b` exact, `/a/b/*` segment prefix of `/a/b`, any other
    `*` a glob (within one segment)."""
    if path.endswith("/*") and "*" not in path[:-2]:
        return ir.PathMatch("segment_prefix", prefix_path(path[:-2]))
    if "*" in path:
        return ir.PathMatch("glob", path)
    return ir.PathMatch("exact", path)


def front_door_match(front_door: str) -> ir.PathMatch:
    return ir.PathMatch("segment_prefix", prefix_path(front_door))


def string_match(value: StringMatch) -> ir.StringMatch:
    if value.exact is not None:
        return ir.StringMatch("exact", value.exact)
    if value.prefix is not None:
        return ir.StringMatch("prefix", value.prefix)
    if value.regex is not None:
        return ir.StringMatch("regex", value.regex)
    return ir.StringMatch("present")


def route_match(match: RouteMatch, front_door: str) -> ir.RouteMatch:
    """One entry's match in normal form; without `match.path` the entry governs the
    front door (SPEC 3.2).

    Two header names that differ only in case collapse to one; the later one in name
    order wins, which only matters for a manifest that asks for both."""
    path = path_match(match.path) if match.path is not None else front_door_match(front_door)
    if not match.headers and not match.query_params:
        return ir.RouteMatch(path, (), (), match.model)  # most entries: path and model only
    headers = {_header_name(name): string_match(value) for name, value in sorted(match.headers.items())}
    query = {name: string_match(value) for name, value in match.query_params.items()}
    return ir.RouteMatch(path, tuple(sorted(headers.items())), tuple(sorted(query.items())), match.model)


def _header_name(name: str) -> str:
    lowered = name.lower()
    return ":authority" if lowered == "host" else lowered
