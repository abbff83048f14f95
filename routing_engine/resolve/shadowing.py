"""Which routes can never match because an earlier route catches all their requests
(SPEC 3.3 `Shadowed`).

`covers(a, b)` is sound, not complete: True only when every request `b` matches is
certainly matched by `a`; when in doubt it says False, so a reported shadow is always
real and some exotic ones (two different regexes) go unreported. The rules:
- path: a segment prefix covers exact paths, segment prefixes and globs below it; an
  exact path covers only itself; a glob covers itself and the exact paths it matches;
- headers and query parameters: every matcher of `a` must be met by `b`'s matcher on
  the same name — equal matchers, `present` (met by any matcher), or a `prefix` that
  `b`'s exact value or longer prefix starts with;
- model: `a` has none, or the same one.

`first_shadowers` scans one listener's routes in order. Earlier routes are indexed by
path so the scan looks only at routes whose path could cover (the ancestors of a path),
which keeps thousands of ModelRoutes on one listener cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from routing_engine import ir
from routing_engine.resolve.matching import is_under, segments


@lru_cache(maxsize=1024)
def _glob_regex(glob: str) -> re.Pattern[str]:
    return re.compile("[^/]*".join(re.escape(part) for part in glob.split("*")))


def path_covers(a: ir.PathMatch, b: ir.PathMatch) -> bool:
    if a.kind == "segment_prefix":
        if b.kind != "glob":
            return is_under(b.value, a.value)
        prefix = segments(a.value)
        return segments(b.value)[: len(prefix)] == prefix and len(segments(b.value)) >= len(prefix)
    if a.kind == "exact":
        return b.kind == "exact" and a.value == b.value
    if b.kind == "exact":
        return _glob_regex(a.value).fullmatch(b.value) is not None
    return b.kind == "glob" and a.value == b.value


def string_covers(a: ir.StringMatch, b: ir.StringMatch) -> bool:
    if a.kind == "present" or a == b:
        return True
    return a.kind == "prefix" and b.kind in ("exact", "prefix") and b.value.startswith(a.value)


def _all_met(a: Sequence[tuple[str, ir.StringMatch]], b: Sequence[tuple[str, ir.StringMatch]]) -> bool:
    b_by_name = dict(b)
    return all(name in b_by_name and string_covers(m, b_by_name[name]) for name, m in a)


def covers(a: ir.RouteMatch, b: ir.RouteMatch) -> bool:
    """Does every request matched by `b` also match `a`?"""
    return (
        path_covers(a.path, b.path)
        and _all_met(a.headers, b.headers)
        and _all_met(a.query_params, b.query_params)
        and (a.model is None or a.model == b.model)
    )


def _ancestors(path: ir.PathMatch) -> list[str]:
    """Segment prefixes that could cover `path`: its literal leading segments."""
    parts = segments(path.value)
    if path.kind == "glob":
        literal = []
        for part in parts:
            if "*" in part:
                break
            literal.append(part)
        parts = tuple(literal)
    return ["/" + "/".join(parts[:n]) for n in range(len(parts) + 1)]


def first_shadowers(routes: Sequence[ir.Route], checked: Iterable[str]) -> dict[str, str]:
    """For each route named in `checked`, the name of the first earlier route in
    `routes` that covers it, if any. `routes` are in match order."""
    wanted = set(checked)
    prefixes: dict[str, list[tuple[int, ir.Route]]] = {}
    exacts: dict[str, list[tuple[int, ir.Route]]] = {}
    globs: list[tuple[int, ir.Route]] = []
    found: dict[str, str] = {}
    for position, route in enumerate(routes):
        path = route.match.path
        if route.name in wanted:
            candidates: list[tuple[int, ir.Route]] = []
            for ancestor in _ancestors(path):
                candidates.extend(prefixes.get(ancestor, ()))
            if path.kind == "exact":
                candidates.extend(exacts.get(path.value, ()))
            if path.kind != "segment_prefix":
                candidates.extend(globs)
            covering = [c for c in candidates if covers(c[1].match, route.match)]
            if covering:
                found[route.name] = min(covering, key=lambda c: c[0])[1].name
        bucket = {"segment_prefix": prefixes, "exact": exacts}.get(path.kind)
        if bucket is None:
            globs.append((position, route))
        else:
            bucket.setdefault(path.value, []).append((position, route))
    return found
