"""AdmissionReview v1 handlers as pure functions: the validating webhook reuses the
loader's validation (the same rules and messages as `modelroute validate`), the mutating
webhook writes the seed's defaults into the object so users see them with `kubectl get`.

Why a webhook on top of the CRD schema: the schema cannot express cross-field rules
(canary splits summing to 100, jwt needing an issuer, duration syntax with a hint), and
an object the API server accepts but the engine rejects would only surface later, as a
condition. A ModelServer's `spec.extensions` is checked against the plugins the control
plane compiles with, when the server passes their models. Cross-object rules (does the
referenced Model exist?) are not checked here: admission must not depend on creation
order; they become `ModelNotFound` conditions.

Defaults (mutating): ModelServer `service.type: ClusterIP`, `service.targetPort` = `port`,
`routing.timeout: 60s` (SPEC 3.1); ModelInfer `replicas: 1`; ModelRoute canary
`analysis.stepWeight: 10`, `maxFailures: 2`, `minRequests: 20` (SPEC 2). A default is
added only where the field is absent: the user's values always win.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from routing_engine.api.extensions import ExtensionModels
from routing_engine.api.loader import parse_document

Obj = dict[str, Any]
SOURCE = "admission"


def _response(review: Obj, allowed: bool, **extra: Any) -> Obj:
    request = review.get("request") or {}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": request.get("uid", ""), "allowed": allowed, **extra}}


def validate(review: Obj, extensions: ExtensionModels | None = None) -> Obj:
    """Allow the object or deny it with every broken rule, one per line. `extensions`:
    the installed plugins' models, that a ModelServer's `spec.extensions` is checked
    against as `modelroute validate` checks it (None: not checked)."""
    request = review.get("request") or {}
    if request.get("operation") == "DELETE" or request.get("object") is None:
        return _response(review, True)
    obj = copy.deepcopy(request["object"])
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", request.get("namespace") or "default")
    if not meta.get("name") and request.get("name"):
        meta["name"] = request["name"]
    _, errors = parse_document(obj, source=SOURCE, index=1, extensions=extensions)
    if not errors:
        return _response(review, True)
    message = "\n".join(str(e).removeprefix(f"{SOURCE}#1: ") for e in errors)
    return _response(review, False, status={"code": 422, "reason": "Invalid", "message": message})


def _defaults(obj: Obj) -> list[tuple[tuple[str, ...], Any]]:
    """(path, value) of each default for this kind."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    found: list[tuple[tuple[str, ...], Any]] = []
    if kind == "ModelServer":
        service = spec.get("service") or {}
        found.append((("spec", "service", "type"), "ClusterIP"))
        if "port" in service:
            found.append((("spec", "service", "targetPort"), service["port"]))
        if "routing" in spec:
            found.append((("spec", "routing", "timeout"), "60s"))
    elif kind == "ModelInfer":
        found.append((("spec", "replicas"), 1))
    elif kind == "ModelRoute" and ((spec.get("canary") or {}).get("analysis")) is not None:
        for field, value in (("stepWeight", 10), ("maxFailures", 2), ("minRequests", 20)):
            found.append((("spec", "canary", "analysis", field), value))
    return found


def _pointer(path: tuple[str, ...]) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)


def default_patch(obj: Obj) -> list[Obj]:
    """RFC 6902 operations adding each absent default (parents exist by construction:
    every default sits in a map the user already wrote)."""
    ops: list[Obj] = []
    for path, value in _defaults(obj):
        parent: Any = obj
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] not in parent:
            ops.append({"op": "add", "path": _pointer(path), "value": value})
    return ops


def mutate(review: Obj) -> Obj:
    request = review.get("request") or {}
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return _response(review, True)
    ops = default_patch(obj)
    if not ops:
        return _response(review, True)
    return _response(review, True, patchType="JSONPatch",
                     patch=base64.b64encode(json.dumps(ops).encode()).decode())
