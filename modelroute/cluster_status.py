"""`modelroute status --kubernetes`: the objects' status as the control plane wrote it into
the cluster, shown in the same tables as embedded mode's status view.

Phases, conditions, endpoints, replica counts and the canary state come from each
object's `status` (written by the leader); a route's splits are read from its spec, with
the canary group's weights replaced by the live ones in `status.canary` (what Envoy is
serving). Missing weights follow the engine's rule (`routing_engine.weights`): equal
shares, or an equal share of what the written weights leave of 100.

This reads specs, not a compile: it runs where `modelroute status --kubernetes` runs,
against what the API server stores, and the control plane writes no splits into the
status beyond the canary's live weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from controller.local.status_view import FORMAT_VERSION, StatusDocument, percentages
from routing_engine.weights import shares

KINDS = ("ModelServer", "ModelRoute", "ModelInfer", "Model", "AutoscalingPolicy")


def _describe(match: Mapping[str, Any]) -> str:
    if not match:
        return "*"
    return ", ".join(f"{k} {json.dumps(v, sort_keys=True, separators=(',', ':'))}" for k, v in sorted(match.items()))


def _route(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    namespace = meta.get("namespace", "default")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for entry in spec.get("routes") or []:
        groups.setdefault(json.dumps(entry.get("match") or {}, sort_keys=True), []).append(entry)
    canary = status.get("canary") if (spec.get("canary") or {}).get("enabled") else None
    out_groups = []
    for entries in groups.values():
        weights = shares([e.get("weight") for e in entries])
        roles: list[str | None] = [None] * len(entries)
        if canary and len(entries) == 2:
            weights = [int(canary.get("stableWeight", weights[0])), int(canary.get("canaryWeight", weights[1]))]
            roles = ["stable", "canary"]
        splits = []
        for entry, weight, share, role in zip(entries, weights, percentages(weights), roles):
            ref = entry["destination"]["modelServerRef"]
            split = {"destination": f"{ref.get('namespace') or namespace}/{ref['name']}", "weight": weight,
                     "percent": share}
            splits.append({**split, "role": role} if role else split)
        out_groups.append({"match": _describe(entries[0].get("match") or {}), "splits": splits})
    route: dict[str, Any] = {"namespace": namespace, "name": meta["name"], "frontDoor": spec.get("path"),
                             "groups": out_groups}
    if canary:
        report = (status.get("rollout") or {}).get("report")
        route["canary"] = {"lastSuccessRate": None, **canary, **({"report": report} if report else {})}
    return route


def _object(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    meta, status = obj["metadata"], obj.get("status") or {}
    out: dict[str, Any] = {"kind": kind, "namespace": meta.get("namespace", "default"), "name": meta["name"],
                           "phase": status.get("phase", "?"), "conditions": status.get("conditions") or []}
    for field in ("serviceEndpoint", "activeRoutes", "replicas", "readyReplicas"):
        if field in status:
            out[field] = status[field]
    if "replicas" in out and "readyReplicas" not in out:
        out["readyReplicas"] = 0
    return out


def document(objects: Mapping[str, Sequence[Mapping[str, Any]]], *, now: str) -> StatusDocument:
    """`objects`: kind → the cluster's objects of that kind (as the API returns them)."""
    listed = [_object(kind, o) for kind in KINDS for o in objects.get(kind, ())]
    listed.sort(key=lambda o: (o["kind"], o["namespace"], o["name"]))
    routes = [_route(o) for o in sorted(objects.get("ModelRoute", ()),
                                        key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))]
    return {"version": FORMAT_VERSION, "updatedAt": now, "objects": listed, "routes": routes, "errors": {}}
