"""CustomResourceDefinitions generated from the pydantic models, so the cluster and the loader
enforce one set of rules.

The models' JSON schema is rewritten into a *structural* OpenAPI v3 schema, which the API
server requires: every `$ref` inlined, a `type` on every node, no `additionalProperties`
next to `properties`, no `propertyNames`. Free-form maps (authentication.config, affinity,
HPA metrics/behavior) become `x-kubernetes-preserve-unknown-fields`; quantities are
`x-kubernetes-int-or-string`. A header/query match value is "a string or an object", which
no structural `type` can say and which int-or-string (integer|string only) would reject in
its object form, so it is an untyped preserve-unknown-fields node and the loader checks
its shape. Cross-field rules the schema cannot express are CEL `x-kubernetes-validations`.
Descriptions come from the models' field descriptions (the seeds' wording), so
`kubectl explain modelroute.spec.routes` reads like the documentation; class docstrings
are notes for developers and stay out.

`python -m routing_engine.api.crd --write` rewrites `crds/`; a test fails when the checked-in
files differ from what the models generate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from routing_engine.api.resources import (
    AutoscalingPolicy,
    Condition,
    Model,
    ModelInfer,
    ModelRoute,
    ModelServer,
    Resource,
)

CRD_KINDS: tuple[type[Resource], ...] = (ModelServer, ModelRoute, ModelInfer, Model, AutoscalingPolicy)
CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
_INT32_MAX = 2**31 - 1
# Not allowed (or meaningless) in a structural schema; each is handled in `_convert`.
_DROPPED = frozenset({"title", "default", "$defs", "propertyNames", "patternProperties", "additionalProperties"})
# What `kubectl explain` shows for the envelope of built-in kinds.
ENVELOPE_DESCRIPTIONS = {
    "apiVersion": "APIVersion defines the versioned schema of this representation of an object.",
    "kind": "Kind is a string value representing the REST resource this object represents.",
    "metadata": "Standard object's metadata (name, namespace, labels, annotations).",
}
_HEADER = "# Generated from routing_engine/api by `python -m routing_engine.api.crd --write`; do not edit.\n"

# CEL rules for the cross-field checks of the models' validators, keyed by model name.
_CEL: dict[str, list[dict[str, str]]] = {
    "TrafficSplit": [{"rule": "self.stable + self.canary == 100", "message": "stable + canary must be 100"}],
    "TLSSpec": [
        {
            "rule": "!(has(self.enabled) && self.enabled) || has(self.secretName)",
            "message": "secretName is required when tls is enabled",
        }
    ],
    "RateLimitSpec": [
        {
            "rule": "!(has(self.enabled) && self.enabled) || has(self.requestsPerSecond)",
            "message": "requestsPerSecond is required when rateLimit is enabled",
        },
        {
            "rule": "!(has(self.inputTokensPerUnit) || has(self.outputTokensPerUnit)) || (has(self.global) && self.global)",
            "message": "token limits require global: true",
        },
    ],
}

_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_PHASE = {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
_PRINTER_COLUMNS: dict[str, list[dict[str, str]]] = {
    "ModelServer": [_PHASE, {"name": "Endpoint", "type": "string", "jsonPath": ".status.serviceEndpoint"}, _AGE],
    "ModelRoute": [_PHASE, {"name": "Path", "type": "string", "jsonPath": ".spec.path"}, _AGE],
    "ModelInfer": [
        _PHASE,
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        _AGE,
    ],
    "Model": [_PHASE, {"name": "Model", "type": "string", "jsonPath": ".spec.modelSpec.modelId"}, _AGE],
    "AutoscalingPolicy": [
        {"name": "Target", "type": "string", "jsonPath": ".spec.targetRef.name"},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
        _AGE,
    ],
}

_INT32 = {"type": "integer", "format": "int32"}


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


def _status_schema(kind: str) -> dict[str, Any]:
    """The status the controller writes (SPEC 2). Unknown fields are kept so a newer
    controller never has its status update rejected by an older CRD."""
    props: dict[str, Any] = {
        "observedGeneration": _described({"type": "integer", "format": "int64"},
                                         "The metadata.generation this status describes"),
        "conditions": _described({"type": "array", "items": structural(_without_description(Condition.model_json_schema(by_alias=True)))},
                                 "Detailed status conditions (Ready, Accepted, ResolvedRefs, Programmed, ...)"),
    }
    phases = {
        "ModelServer": ["Pending", "Ready", "Failed"],
        "ModelRoute": ["Pending", "Active", "Failed"],
        "ModelInfer": ["Pending", "Running", "Failed"],
        "Model": ["Pending", "Ready", "Failed"],
    }
    if kind in phases:
        props["phase"] = {"type": "string", "enum": phases[kind],
                          "description": f"Current phase ({', '.join(phases[kind])})"}
    if kind == "ModelServer":
        props["serviceEndpoint"] = _described({"type": "string"}, "Service endpoint URL")
    if kind == "ModelRoute":
        props["activeRoutes"] = _described(dict(_INT32), "Number of the route's groups Envoy is serving")
        props["canary"] = {
            "type": "object",
            "description": "(ext) The live canary split: what Envoy serves, moved by the canary analysis",
            "properties": {
                "stableWeight": _described(dict(_INT32), "Live weight of the stable destination, in percent"),
                "canaryWeight": _described(dict(_INT32), "Live weight of the canary destination, in percent"),
                "phase": {"type": "string", "enum": ["Progressing", "Promoted", "RolledBack", "Paused"],
                          "description": "Rollout phase (Progressing, Promoted, RolledBack, Paused)"},
                "lastSuccessRate": _described({"type": "number"}, "The canary's success rate in the last interval, "
                                                                  "in percent"),
            },
        }
    if kind == "ModelInfer":
        props.update(replicas=_described(dict(_INT32), "Replicas that exist"),
                     readyReplicas=_described(dict(_INT32), "Replicas ready to serve"),
                     selector=_described({"type": "string"}, "Label selector of the replicas' pods (scale "
                                                             "subresource)"))
    if kind == "AutoscalingPolicy":
        props.update(currentReplicas=_described(dict(_INT32), "Replicas the target has now"),
                     desiredReplicas=_described(dict(_INT32), "Replicas the autoscaler wants"))
    return {"type": "object", "description": "Status written by the controller; read only", "properties": props,
            "x-kubernetes-preserve-unknown-fields": True}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema → a structural OpenAPI v3 schema (see the module docstring)."""
    defs = {name: _without_description(d) for name, d in schema.get("$defs", {}).items()}
    for name, rules in _CEL.items():
        if name in defs:
            defs[name] = {**defs[name], "x-kubernetes-validations": rules}
    return _convert(schema, defs)


def _without_description(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's own schema: its description is the class docstring, for developers."""
    return {k: v for k, v in schema.items() if k != "description"}


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`description` is the field's, set next to a `$ref` or union; it wins over the type's."""
    if "$ref" in node:
        return _with_description(_convert(defs[node["$ref"].rsplit("/", 1)[-1]], defs), node)
    any_of = node.get("anyOf")
    if any_of and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in any_of if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"no structural form for a union: {any_of}")
        return _with_description(_convert(options[0], defs), node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        else:
            out[key] = value
    extra = node.get("additionalProperties")
    if node.get("patternProperties"):  # dict with constrained keys: the loader checks keys
        (extra,) = node["patternProperties"].values()
    if isinstance(extra, dict) and extra and not node.get("properties"):
        out["additionalProperties"] = _convert(extra, defs)
    elif (extra is True or extra == {}) and not node.get("properties"):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "object" and not out.get("properties") and "additionalProperties" not in out:
        out.pop("properties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "integer" and out.get("maximum", _INT32_MAX + 1) <= _INT32_MAX:
        out["format"] = "int32"
    return _ordered(out)


def _with_description(converted: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "description" not in node:
        return converted
    return _ordered({**converted, "description": node["description"]})


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """`type` first, then `description`, then the rest as they came: for readers."""
    return dict(sorted(node.items(), key=lambda kv: {"type": 0, "description": 1}.get(kv[0], 2)))


def crd_for(cls: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    group, version = cls.API_VERSION.split("/")
    full = cls.model_json_schema(by_alias=True)
    spec = full["properties"]["spec"]
    schema = {
        "type": "object",
        "description": cls.DESCRIPTION,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": ENVELOPE_DESCRIPTIONS["apiVersion"]},
            "kind": {"type": "string", "description": ENVELOPE_DESCRIPTIONS["kind"]},
            "metadata": {"type": "object", "description": ENVELOPE_DESCRIPTIONS["metadata"]},
            "spec": structural({**spec, "$defs": full.get("$defs", {})}),
            "status": _status_schema(cls.KIND),
        },
    }
    subresources: dict[str, Any] = {"status": {}}
    if cls is ModelInfer:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    names: dict[str, Any] = {
        "kind": cls.KIND,
        "listKind": f"{cls.KIND}List",
        "plural": cls.PLURAL,
        "singular": cls.KIND.lower(),
        "categories": ["matrixinfer"],
    }
    if cls.SHORT_NAMES:
        names["shortNames"] = list(cls.SHORT_NAMES)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{cls.PLURAL}.{group}"},
        "spec": {
            "group": group,
            "names": names,
            "scope": "Namespaced",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": _PRINTER_COLUMNS[cls.KIND],
                }
            ],
        },
    }


class NoAliasDumper(yaml.SafeDumper):
    """Shared sub-schemas are written out in full: `&id001` anchors confuse readers."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def rendered() -> dict[str, str]:
    """File name → YAML text of every CRD, exactly as checked in under crds/."""
    out = {}
    for cls in CRD_KINDS:
        crd = crd_for(cls)
        text = yaml.dump(crd, Dumper=NoAliasDumper, sort_keys=False, default_flow_style=False, width=1000)
        out[f"{crd['metadata']['name']}.yaml"] = _HEADER + text
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing_engine.api.crd", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {CRD_DIR} (default: print differences)")
    args = parser.parse_args(argv)
    files = rendered()
    if args.write:
        CRD_DIR.mkdir(exist_ok=True)
        for stale in CRD_DIR.glob("*.yaml"):
            if stale.name not in files:
                stale.unlink()
        for name, text in files.items():
            (CRD_DIR / name).write_text(text)
        print(f"wrote {len(files)} CRDs to {CRD_DIR}")
        return 0
    outdated = [name for name, text in files.items() if not (CRD_DIR / name).exists() or (CRD_DIR / name).read_text() != text]
    for name in outdated:
        print(f"crds/{name} is out of date")
    return 1 if outdated else 0


if __name__ == "__main__":
    sys.exit(main())
