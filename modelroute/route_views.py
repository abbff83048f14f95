"""What each ModelRoute's traffic split is, as the engine served it (`Compiled.routes`).

The status view and `modelroute up` show splits from the compile, never from a second
reading of the spec, so what is shown is what is served (live canary weights included).
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.local.status_view import GroupView, RouteView, SplitView
from routing_engine import ir
from routing_engine.api.resources import ModelRoute, ObjectKey, Resource
from routing_engine.world import Compiled


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


def route_views(compiled: Compiled, objects: Sequence[Resource]) -> list[RouteView]:
    """One view per ModelRoute the compile installed (`Compiled.routes`), in key order.
    The front door shown is the one written (`spec.path`), else, for a route with a
    fallback, the path its catch-all serves."""
    specs = {o.key: o for o in objects if isinstance(o, ModelRoute)}
    views = []
    for key, served in compiled.routes.items():
        groups = tuple(GroupView(describe_match(g.match, fallback=g.fallback),
                                 tuple(SplitView(f"{s.server.namespace}/{s.server.name}", s.weight) for s in g.splits))
                       for g in served.groups)
        spec = specs.get(key)
        if spec is not None and spec.spec.path:
            front: str | None = spec.spec.path
        else:
            front = next((g.match.path.value for g in served.groups if g.fallback), None)
        views.append(RouteView(key=key, front_door=front, groups=groups))
    return views
