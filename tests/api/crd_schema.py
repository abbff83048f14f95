"""Test helpers: the checked-in CRDs as jsonschema validators.

The API server prunes or (with kubectl's default strict field validation) rejects unknown
fields; jsonschema knows neither, so `strict` adds `additionalProperties: false` wherever
the CRD lists properties and does not preserve unknown fields.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema
import yaml

from routing_engine.api.crd import CRD_DIR


@functools.cache
def load_crds() -> dict[str, dict[str, Any]]:
    """Kind → CRD, from crds/ as checked in."""
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)

    def walk(node: dict[str, Any]) -> None:
        if "properties" in node:
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for sub in node["properties"].values():
                walk(sub)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"])
        if isinstance(node.get("items"), dict):
            walk(node["items"])

    walk(out)
    return out


@functools.cache
def validator(kind: str) -> jsonschema.Draft4Validator:
    crd = load_crds()[kind]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(strict(schema))
