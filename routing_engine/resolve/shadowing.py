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
path (the ancestors of a path, the same exact path, globs), and within a path by one of
their header, query or model requirements (`_Index`): a route is checked only against
earlier routes whose indexed requirement it meets. So thousands of ModelRoutes on one
listener, or one ModelRoute with 10,000 header entries on one path, cost about one
dictionary look-up per requirement, not one `covers` call per earlier route.
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


# An index key: one requirement a route makes (None: it makes none).
_Need = tuple[str, ...] | None
# How selective each kind of requirement is: an exact value (or an equal regex, a model)
# narrows candidates the most, a prefix less, `present` least.
_SELECTIVITY = {"exact": 0, "regex": 0, "model": 0, "prefix": 1, "present": 2}


def _needs(match: ir.RouteMatch) -> list[tuple[str, ...]]:
    """Every requirement a route makes besides its path, as index keys."""
    found: list[tuple[str, ...]] = []
    for part, pairs in (("header", match.headers), ("query", match.query_params)):
        for name, m in pairs:
            found.append((part, name, m.kind) if m.kind == "present" else (part, name, m.kind, m.value))
    if match.model is not None:
        found.append(("model", "model", "model", match.model))
    return found


def _offers(match: ir.RouteMatch) -> list[_Need]:
    """The index keys of every requirement `match` meets (`string_covers`, key by key),
    plus None for routes that require nothing."""
    found: list[_Need] = [None]
    for part, pairs in (("header", match.headers), ("query", match.query_params)):
        for name, m in pairs:
            found.append((part, name, "present"))
            if m.kind in ("exact", "regex"):
                found.append((part, name, m.kind, m.value))
            if m.kind in ("exact", "prefix"):
                found.extend((part, name, "prefix", m.value[:n]) for n in range(len(m.value) + 1))
    if match.model is not None:
        found.append(("model", "model", "model", match.model))
    return found


class _Index:
    """Earlier routes of one path bucket, each filed under one of its requirements (the
    most selective kind, then the least crowded key): a route that does not meet that
    requirement cannot be covered by it, so it is never compared with it."""

    def __init__(self) -> None:
        self._by_need: dict[_Need, list[tuple[int, ir.Route]]] = {}

    def add(self, position: int, route: ir.Route) -> None:
        needs = _needs(route.match)
        key: _Need = None
        if needs:
            key = min(needs, key=lambda n: (_SELECTIVITY[n[2]], len(self._by_need.get(n, ()))))
        self._by_need.setdefault(key, []).append((position, route))

    def first_cover(self, route: ir.Route, offers: list[_Need]) -> tuple[int, ir.Route] | None:
        """The earliest route in this bucket that covers `route`."""
        best: tuple[int, ir.Route] | None = None
        for key in offers:
            for candidate in self._by_need.get(key, ()):
                if best is not None and candidate[0] >= best[0]:
                    break
                if covers(candidate[1].match, route.match):
                    best = candidate
                    break
        return best


def first_shadowers(routes: Sequence[ir.Route], checked: Iterable[str]) -> dict[str, str]:
    """For each route named in `checked`, the name of the first earlier route in
    `routes` that covers it, if any. `routes` are in match order."""
    wanted = set(checked)
    prefixes: dict[str, _Index] = {}
    exacts: dict[str, _Index] = {}
    globs = _Index()
    found: dict[str, str] = {}
    ancestors: dict[ir.PathMatch, list[str]] = {}  # the routes of one ModelRoute share a path
    for position, route in enumerate(routes):
        path = route.match.path
        if route.name in wanted:
            above = ancestors.get(path)
            if above is None:
                above = ancestors[path] = _ancestors(path)
            buckets = [index for ancestor in above if (index := prefixes.get(ancestor)) is not None]
            if path.kind == "exact" and path.value in exacts:
                buckets.append(exacts[path.value])
            if path.kind != "segment_prefix":
                buckets.append(globs)
            if buckets:
                offers = _offers(route.match)
                covering = [c for index in buckets if (c := index.first_cover(route, offers)) is not None]
                if covering:
                    found[route.name] = min(covering, key=lambda c: c[0])[1].name
        if path.kind == "glob":
            globs.add(position, route)
        else:
            bucket = prefixes if path.kind == "segment_prefix" else exacts
            index = bucket.get(path.value)
            if index is None:
                index = bucket[path.value] = _Index()
            index.add(position, route)
    return found
