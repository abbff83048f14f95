"""What each ModelRoute's traffic split is, read off the IR Envoy was actually given.

The status view and `modelroute up` show splits from the compiled IR, never from a second
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
    gateway = compiled.gateway
    if gateway is None:
        return []
    server_of = {b.name: b.owner for b in gateway.backends}
    specs = {o.key: o for o in objects if isinstance(o, ModelRoute)}
    seen: set[str] = set()
    groups: dict[ObjectKey, list[GroupView]] = {}
    front_doors: dict[ObjectKey, str] = {}
    for listener in gateway.listeners:
        for route in listener.routes:
            if route.owner.kind != "ModelRoute" or route.name in seen or route.derived_from is not None:
                continue  # a LoRA adapter's copy of a group (issue 18) is part of that group
            seen.add(route.name)
            is_fallback = route.name.endswith("/fallback")
            if is_fallback:
                front_doors[route.owner] = route.match.path.value
            splits = tuple(SplitView(destination=f"{server_of[b.backend].namespace}/{server_of[b.backend].name}",
                                     weight=b.weight) for b in route.backends if b.backend in server_of)
            groups.setdefault(route.owner, []).append(GroupView(describe_match(route.match, fallback=is_fallback),
                                                                splits))
    views = []
    for key in sorted(groups):
        spec = specs.get(key)
        front = spec.spec.path if spec is not None and spec.spec.path else front_doors.get(key)
        views.append(RouteView(key=key, front_door=front, groups=tuple(groups[key])))
    return views
