"""What each ModelRoute's traffic split is, as the engine served it (`Compiled.routes`).

The status view and `modelroute up` show splits from the compile, never from a second
reading of the spec, so what is shown is what is served (live canary weights included).
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.local.status_view import GroupView, RouteView, SplitView
from routing_engine import ir
from routing_engine.api.resources import ModelRoute, ObjectKey, Resource
from routing_engine.world import Compiled, ServedRoute


def describe_match(match: ir.RouteMatch, *, fallback: bool = False) -> str:
    if fallback:
        return f"{match.path.value} (unmatched → fallback)"
    parts = [f"path {match.path.value}{'/*' if match.path.kind == 'segment_prefix' else ''}"]
    parts += [f"header {n}{_op(m)}" for n, m in match.headers]
    parts += [f"query {n}{_op(m)}" for n, m in match.query_params]
    if match.model is not None:
        parts.append(f"model={match.model}")
    return ", ".join(parts)


def _op(m: ir.StringMatch) -> str:
    return {"exact": f"={m.value}", "prefix": f"^={m.value}", "regex": f"~{m.value}", "present": " present"}[m.kind]


ViewMemo = dict[ObjectKey, tuple[ServedRoute, str | None, RouteView]]
"""`route_views`' memory: route → (what the compile served, front door, its view)."""


def route_views(compiled: Compiled, objects: Sequence[Resource], memo: ViewMemo | None = None) -> list[RouteView]:
    """One view per ModelRoute the compile installed (`Compiled.routes`), in key order.
    The front door shown is the one written (`spec.path`), else, for a route with a
    fallback, the path its catch-all serves. With `memo` (kept by the caller), a route
    whose served form is the very object of the last call keeps its very view (the
    status file then reuses its JSON)."""
    specs = {o.key: o for o in objects if isinstance(o, ModelRoute)}
    views = []
    kept: ViewMemo = {}
    for key, served in compiled.routes.items():
        spec = specs.get(key)
        if spec is not None and spec.spec.path:
            front: str | None = spec.spec.path
        else:
            front = next((g.match.path.value for g in served.groups if g.fallback), None)
        known = memo.get(key) if memo is not None else None
        if known is not None and known[0] is served and known[1] == front:
            view = known[2]
        else:
            groups = tuple(GroupView(describe_match(g.match, fallback=g.fallback),
                                     tuple(SplitView(f"{s.server.namespace}/{s.server.name}", s.weight)
                                           for s in g.splits))
                           for g in served.groups)
            view = RouteView(key=key, front_door=front, groups=groups)
        kept[key] = (served, front, view)
        views.append(view)
    if memo is not None:
        memo.clear()
        memo.update(kept)
    return views
