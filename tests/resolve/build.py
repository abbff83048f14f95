"""Helpers for resolve tests: objects from YAML, compact factories, and lookups into
the IR, so each test reads as its manifest plus the few facts it checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from routing_engine import ir
from routing_engine.api.resources import KIND_BY_NAME, ObjectKey, Resource
from routing_engine.resolve import Resolution, resolve
from routing_engine.world import BackendEndpoint, ConditionView, Target, World

NET = "networking.matrixinfer.ai/v1alpha1"
WORKLOAD = "workload.matrixinfer.ai/v1alpha1"


def objects(text: str) -> list[Resource]:
    """Every document of a multi-document YAML string, validated by its kind."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    return [KIND_BY_NAME[d["kind"]].model_validate(d) for d in docs]


def _meta(name: str, namespace: str, created: str | None, annotations: dict[str, str] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        meta["creationTimestamp"] = created
    if annotations:
        meta["annotations"] = annotations
    return meta


def server(
    name: str,
    path: str,
    port: int = 8080,
    *,
    namespace: str = "default",
    infer: str | None = None,
    infer_namespace: str | None = None,
    created: str | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Resource:
    """A ModelServer; extra keyword arguments are spec fields in camelCase."""
    ref: dict[str, Any] = {"name": infer or name}
    if infer_namespace:
        ref["namespace"] = infer_namespace
    service = {"port": port, **spec.pop("service", {})}
    routing = {"path": path, **spec.pop("routing", {})}
    doc = {
        "apiVersion": NET,
        "kind": "ModelServer",
        "metadata": _meta(name, namespace, created, annotations),
        "spec": {"modelInferRef": ref, "service": service, "routing": routing, **spec},
    }
    return KIND_BY_NAME["ModelServer"].model_validate(doc)


def infer(name: str, *, namespace: str = "default", annotations: dict[str, str] | None = None) -> Resource:
    doc = {
        "apiVersion": WORKLOAD,
        "kind": "ModelInfer",
        "metadata": _meta(name, namespace, None, annotations),
        "spec": {"modelRef": {"name": name}},
    }
    return KIND_BY_NAME["ModelInfer"].model_validate(doc)


def route(name: str, spec: dict[str, Any], *, namespace: str = "default", created: str | None = None) -> Resource:
    doc = {"apiVersion": NET, "kind": "ModelRoute", "metadata": _meta(name, namespace, created, None), "spec": spec}
    return KIND_BY_NAME["ModelRoute"].model_validate(doc)


def to(name: str, namespace: str | None = None, **entry: Any) -> dict[str, Any]:
    """One `spec.routes` entry sending to ModelServer `name`."""
    ref: dict[str, Any] = {"name": name}
    if namespace:
        ref["namespace"] = namespace
    return {"destination": {"modelServerRef": ref}, **entry}


def secret(name: str, string_data: dict[str, str], *, namespace: str = "default") -> Resource:
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
           "stringData": string_data}
    return KIND_BY_NAME["Secret"].model_validate(doc)


def up(*infer_names: str, namespace: str = "default", port: int | None = None) -> dict[ObjectKey, tuple[BackendEndpoint, ...]]:
    """One healthy endpoint per named ModelInfer."""
    return {
        ObjectKey("ModelInfer", namespace, n): (BackendEndpoint(f"10.0.0.{i + 1}", port),)
        for i, n in enumerate(infer_names)
    }


def run(objs: Iterable[Resource], target: Target | None = None, **world: Any) -> Resolution:
    return resolve(World(objects=tuple(objs), **world), target or Target())


def key(kind: str, name: str, namespace: str = "default") -> ObjectKey:
    return ObjectKey(kind, namespace, name)


def ms(name: str, namespace: str = "default") -> ObjectKey:
    return ObjectKey("ModelServer", namespace, name)


def mr(name: str, namespace: str = "default") -> ObjectKey:
    return ObjectKey("ModelRoute", namespace, name)


def cond(res: Resolution, obj: ObjectKey, type_: str) -> ConditionView:
    matches = [c for c in res.statuses[obj].conditions if c.type == type_]
    assert len(matches) == 1, f"{obj} has {len(matches)} {type_} conditions"
    return matches[0]


def listener(res: Resolution, port: int) -> ir.Listener:
    found = [l for l in res.gateway.listeners if l.port == port]
    assert len(found) == 1, f"{len(found)} listeners on port {port}"
    return found[0]


def route_names(res: Resolution, port: int) -> list[str]:
    return [r.name for r in listener(res, port).routes]


def ir_route(res: Resolution, name: str, port: int = 8080) -> ir.Route:
    found = [r for r in listener(res, port).routes if r.name == name]
    assert len(found) == 1, f"{len(found)} routes named {name} on port {port}"
    return found[0]
