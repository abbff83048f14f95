"""The CRDs are generated from the models; these tests keep the two from drifting and check
the rules a real API server applies to a CRD (structural schema, subresources)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from routing_engine.api import crd
from routing_engine.api.loader import load_manifests, load_text
from tests.api.crd_schema import load_crds, validator
from tests.support import REPO

REGENERATE = "python -m routing_engine.api.crd --write"


def test_checked_in_crds_match_the_models() -> None:
    generated = crd.rendered()
    on_disk = {p.name: p.read_text() for p in crd.CRD_DIR.glob("*.yaml")}
    stale = sorted(n for n in generated.keys() | on_disk.keys() if generated.get(n) != on_disk.get(n))
    assert not stale, f"crds/ is out of date ({', '.join(stale)}): run `{REGENERATE}`"


def test_check_mode_reports_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(crd, "CRD_DIR", tmp_path)
    assert crd.main([]) == 1
    assert "crds/modelservers.networking.matrixinfer.ai.yaml is out of date" in capsys.readouterr().out
    assert crd.main(["--write"]) == 0
    (tmp_path / "old.yaml").write_text("stale")
    assert crd.main(["--write"]) == 0
    assert not (tmp_path / "old.yaml").exists()
    assert crd.main([]) == 0


def _structural_problems(node: Any, path: str) -> list[str]:
    """The structural-schema rules of apiextensions.k8s.io/v1 that generation could break."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return [f"{path}: not a schema"]
    if "$ref" in node or "$defs" in node:
        problems.append(f"{path}: $ref/$defs")
    untyped_ok = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in node and not untyped_ok:
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties")
    for banned in ("patternProperties", "propertyNames", "title", "default"):
        if banned in node:
            problems.append(f"{path}: {banned}")
    if "anyOf" in node:
        if not node.get("x-kubernetes-int-or-string") or node["anyOf"] != [{"type": "integer"}, {"type": "string"}]:
            problems.append(f"{path}: anyOf outside the int-or-string form")
    if "not" in node and set(node["not"]) - {"pattern"}:
        problems.append(f"{path}: `not` may only hold value validations")
    for name, sub in node.get("properties", {}).items():
        problems += _structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _structural_problems(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        problems += _structural_problems(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("kind", [c.KIND for c in crd.CRD_KINDS])
def test_schema_is_structural(kind: str) -> None:
    version = load_crds()[kind]["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert _structural_problems(schema, "") == []
    assert schema["properties"]["metadata"] == {"type": "object", "description": crd.ENVELOPE_DESCRIPTIONS["metadata"]}


def test_structural_check_catches_untyped_nodes() -> None:
    assert _structural_problems({"type": "object", "properties": {"a": {}}}, "") == [".a: no type"]
    assert _structural_problems({"anyOf": [{"type": "string"}, {"type": "object"}]}, "") != []


def test_names_subresources_and_columns() -> None:
    crds = load_crds()
    assert set(crds) == {"ModelServer", "ModelRoute", "ModelInfer", "Model", "AutoscalingPolicy"}
    short = {k: c["spec"]["names"].get("shortNames") for k, c in crds.items()}
    assert short["ModelServer"] == ["ms"] and short["ModelRoute"] == ["mr"] and short["ModelInfer"] == ["mi"]
    for kind, c in crds.items():
        assert c["apiVersion"] == "apiextensions.k8s.io/v1"
        assert c["spec"]["scope"] == "Namespaced"
        version = c["spec"]["versions"][0]
        assert version["subresources"]["status"] == {}
        columns = [col["name"] for col in version["additionalPrinterColumns"]]
        assert columns[-1] == "Age"
    mi = crds["ModelInfer"]["spec"]["versions"][0]["subresources"]["scale"]
    assert mi["specReplicasPath"] == ".spec.replicas" and mi["statusReplicasPath"] == ".status.replicas"
    ms_columns = [c["name"] for c in crds["ModelServer"]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert ms_columns == ["Phase", "Endpoint", "Age"]
    assert "scale" not in crds["ModelServer"]["spec"]["versions"][0]["subresources"]


def test_file_names_are_plural_dot_group() -> None:
    names = sorted(p.name for p in crd.CRD_DIR.glob("*.yaml"))
    assert names == [
        "autoscalingpolicies.registry.matrixinfer.ai.yaml",
        "modelinfers.workload.matrixinfer.ai.yaml",
        "modelroutes.networking.matrixinfer.ai.yaml",
        "models.registry.matrixinfer.ai.yaml",
        "modelservers.networking.matrixinfer.ai.yaml",
    ]


EXAMPLE_DOCS = [
    (path, doc)
    for directory in ("seeds", "quickstart")
    for path in sorted((REPO / "examples" / directory).glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc and doc["kind"] != "Secret"
]


@pytest.mark.parametrize(
    ("path", "doc"), EXAMPLE_DOCS, ids=[f"{p.parent.name}/{p.name}:{d['metadata']['name']}" for p, d in EXAMPLE_DOCS]
)
def test_examples_validate_against_their_crd(path: Path, doc: dict[str, Any]) -> None:
    errors = [e.message for e in validator(doc["kind"]).iter_errors(doc)]
    assert errors == []
    assert load_manifests([path])[1] == []


def test_duration_pattern_agrees_with_the_model() -> None:
    """The CRD's RE2-compatible pattern and the Python parser must accept the same texts."""
    import re

    from routing_engine.api.types import POSITIVE_DURATION_PATTERN, parse_duration_ms

    for text in ["500ms", "30s", "1m30s", "1h", "1.5h", "0s", "0ms", "30", "abc", "1m0s", "0.5s", "s", ""]:
        try:
            ok = parse_duration_ms(text) > 0
        except ValueError:
            ok = False
        assert bool(re.match(POSITIVE_DURATION_PATTERN, text)) == ok, text


# Route paths the loader accepts (first list) and refuses (second): the forms Envoy's
# normalization leaves alone and the ones it changes (routing_engine/envoy_rules/path.py).
ACCEPTED_PATHS = ["/v1/models/a", "/v1/a%2Fb", "/v1/a%2fb", "/v1/caf%C3%A9", "/v1/caf%c3%a9", "/v1/.well-known",
                  "/v1/..x", "/v1/a.", "/v1/...", "/v1/[a]", "/v1/a%25b", "/v1/a%5Cb", "/v1/a%zz", "/v1/%2", "/healthz",
                  "/v1/health", "/ready-v2", "/v1/a;b", "/v1/a:b@c", "/v1/a'b", "/", "/v1/"]
REFUSED_PATHS = ["/v1/../x", "/v1/./x", "/.", "/..", "/v1/.", "/v1/..", "/v1/%2e", "/v1/%2E%2E/x", "/v1/%41",
                 "/v1/%7e", "/v1/%5F", "/v1/%2D", "/v1/%39", "/v1/%6d", "/v1/%00", '/v1/"', "/v1/<a>", "/v1\\a", "/v1/^",
                 "/v1/`", "/v1/{", "/v1/|", "/v1/}", "/health", "/ready", "/metrics", "/metrics/", "/v1//a", "/v1/é"]


@pytest.mark.parametrize("path", ACCEPTED_PATHS + REFUSED_PATHS)
def test_path_pattern_agrees_with_the_model(path: str) -> None:
    """The CRD's path patterns refuse what the loader refuses, and only that: for
    `routing.path` (a prefix) and `match.path` (exact, or with `/*` a segment prefix)."""
    server = yaml.safe_load((REPO / "examples" / "seeds" / "model-server-basic.yaml").read_text())
    server["spec"]["routing"]["path"] = path
    route = yaml.safe_load((REPO / "examples" / "seeds" / "model-route-ab-canary.yaml").read_text())
    route["spec"]["routes"][1]["match"]["path"] = path.rstrip("/") + "/*"
    for doc in (server, route):
        loaded = not load_text(yaml.safe_dump(doc), "p.yaml")[1]
        assert loaded == (path in ACCEPTED_PATHS)
        assert loaded == (not list(validator(doc["kind"]).iter_errors(doc))), doc["kind"]


def test_cel_rules_cover_the_cross_field_checks() -> None:
    text = (crd.CRD_DIR / "modelroutes.networking.matrixinfer.ai.yaml").read_text()
    assert "self.stable + self.canary == 100" in text
    text = (crd.CRD_DIR / "modelservers.networking.matrixinfer.ai.yaml").read_text()
    assert "has(self.secretName)" in text and "has(self.requestsPerSecond)" in text


def test_free_form_and_union_fields_use_the_kubernetes_extensions() -> None:
    crds = load_crds()

    def spec_of(kind: str) -> dict[str, Any]:
        return crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]

    def shape(node: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in node.items() if k != "description"}

    match = spec_of("ModelRoute")["routes"]["items"]["properties"]["match"]["properties"]
    # string-or-object: untyped and preserved (int-or-string would reject the object form)
    assert shape(match["headers"]["additionalProperties"]) == {"x-kubernetes-preserve-unknown-fields": True}
    assert shape(match["queryParams"]["additionalProperties"]) == {"x-kubernetes-preserve-unknown-fields": True}
    quantity = spec_of("ModelInfer")["resources"]["properties"]["requests"]["additionalProperties"]
    assert quantity["x-kubernetes-int-or-string"] is True and "pattern" in quantity
    assert shape(spec_of("ModelInfer")["affinity"]) == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    auth = spec_of("ModelServer")["authentication"]["properties"]["config"]
    assert shape(auth) == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    hpa = spec_of("AutoscalingPolicy")
    assert hpa["behavior"]["x-kubernetes-preserve-unknown-fields"] is True
    assert hpa["metrics"]["items"]["x-kubernetes-preserve-unknown-fields"] is True


@pytest.mark.parametrize("value", ["premium", {"exact": "a"}, {"prefix": "a"}, {"regex": "^a"}, {"present": True}])
def test_crd_accepts_every_header_match_form(value: object) -> None:
    doc = yaml.safe_load((REPO / "examples" / "seeds" / "model-route-ab-canary.yaml").read_text())
    doc["spec"]["routes"][0]["match"]["headers"]["x-user-tier"] = value
    assert list(validator("ModelRoute").iter_errors(doc)) == []


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    """Fields without a description (what `kubectl explain` would show empty)."""
    missing = [] if node.get("description") else [path]
    for name, sub in node.get("properties", {}).items():
        missing += _undescribed(sub, f"{path}.{name}")
    if "items" in node and node["items"].get("properties"):
        missing += [p for p in _undescribed(node["items"], f"{path}[]") if p != f"{path}[]"]
    if isinstance(node.get("additionalProperties"), dict) and node["additionalProperties"].get("properties"):
        missing += [p for p in _undescribed(node["additionalProperties"], f"{path}[*]") if p != f"{path}[*]"]
    return missing


@pytest.mark.parametrize("kind", [c.KIND for c in crd.CRD_KINDS])
def test_every_field_is_described_for_kubectl_explain(kind: str) -> None:
    schema = load_crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _undescribed(schema, kind.lower()) == []


def test_descriptions_read_like_the_seeds() -> None:
    """`kubectl explain modelserver.spec.routing` shows the seed's table, word for word
    where the seed has one; no developer docstring leaks into a CRD."""
    crds = load_crds()

    def node(kind: str, *path: str) -> dict[str, Any]:
        at = crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for name in path:
            at = at["items"] if name == "[]" else at["properties"][name]
        return at

    assert node("ModelServer")["description"] == "Exposes models through network services with routing and security policies"
    assert node("ModelServer", "spec", "modelInferRef", "name")["description"] == "Name of the ModelInfer resource"
    assert node("ModelServer", "spec", "service", "port")["description"].startswith("Service port")
    assert node("ModelServer", "spec", "routing", "path")["description"].startswith("URL path for the model endpoint")
    assert node("ModelServer", "spec", "routing", "timeout")["description"].startswith("Request timeout duration")
    assert node("ModelServer", "spec", "routing", "retries")["description"].startswith("Number of retry attempts")
    assert node("ModelServer", "spec", "rateLimit", "burstSize")["description"].startswith("Burst size for rate limiting")
    assert node("ModelServer", "status", "phase")["description"] == "Current phase (Pending, Ready, Failed)"
    assert node("ModelServer", "status", "serviceEndpoint")["description"] == "Service endpoint URL"
    assert node("ModelRoute", "spec", "routes", "[]", "destination", "modelServerRef", "name")["description"] == (
        "Name of the ModelServer resource")
    assert node("ModelRoute", "spec", "routes", "[]", "weight")["description"].startswith("Share of the group's traffic")
    text = "".join(p.read_text() for p in crd.CRD_DIR.glob("*.yaml"))
    for docstring_words in ("camelCase on the wire", "Common envelope", "Kubernetes-style condition", "kind it points to"):
        assert docstring_words not in text
