"""Issue #17: the OpenAPI 3 document of the API — generated from the models, valid
OpenAPI, the checked-in copy up to date, the seeds' descriptions in it, and every example
valid against its kind's schema."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from modelroute.cli import main
from routing_engine.api import openapi
from routing_engine.api.crd import CRD_KINDS
from tests.support import REPO


def test_checked_in_document_is_up_to_date() -> None:
    assert openapi.OPENAPI_FILE.read_text() == openapi.rendered(), \
        "docs/openapi.yaml is out of date: run `python -m routing_engine.api.openapi --write`"


def test_the_document_is_valid_openapi_3() -> None:
    doc = yaml.safe_load(openapi.OPENAPI_FILE.read_text())
    validate(doc)
    operations = [op for path in doc["paths"].values() for verb, op in path.items() if verb != "parameters"]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    for cls in CRD_KINDS:
        item = f"/apis/{cls.API_VERSION}/namespaces/{{namespace}}/{cls.PLURAL}/{{name}}"
        assert set(doc["paths"][item]) == {"parameters", "get", "put", "patch", "delete"}
        assert {"get", "put", "patch"} <= set(doc["paths"][f"{item}/status"])
    assert "/apis/workload.matrixinfer.ai/v1alpha1/namespaces/{namespace}/modelinfers/{name}/scale" in doc["paths"]


def test_the_seeds_descriptions_are_in_it() -> None:
    schemas = yaml.safe_load(openapi.OPENAPI_FILE.read_text())["components"]["schemas"]
    server = schemas["ModelServer"]
    assert server["description"] == "Exposes models through network services with routing and security policies"
    routing = server["properties"]["spec"]["properties"]["routing"]["properties"]
    assert routing["path"]["description"].startswith("URL path for the model endpoint")
    assert schemas["Model"]["description"] == "Represents an AI model with metadata, specifications, and runtime requirements"


EXAMPLES = [(path, doc) for path in sorted((REPO / "examples").rglob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] != "Secret"]


@pytest.mark.parametrize(("path", "doc"), EXAMPLES, ids=[f"{p.name}:{d['metadata']['name']}" for p, d in EXAMPLES])
def test_examples_are_valid_against_the_document(path: Any, doc: dict[str, Any]) -> None:
    schemas = yaml.safe_load(openapi.OPENAPI_FILE.read_text())["components"]["schemas"]
    assert [e.message for e in OAS30Validator(schemas[doc["kind"]]).iter_errors(doc)] == []


def test_the_schemas_refuse_what_the_models_refuse() -> None:
    schemas = yaml.safe_load(openapi.OPENAPI_FILE.read_text())["components"]["schemas"]
    doc = yaml.safe_load((REPO / "examples" / "seeds" / "model-server-basic.yaml").read_text())
    doc["spec"]["service"]["port"] = "8080"
    doc["spec"]["routing"]["path"] = "/v1/models/café"
    messages = [e.message for e in OAS30Validator(schemas["ModelServer"]).iter_errors(doc)]
    assert len(messages) == 2 and any("'8080' is not of type 'integer'" in m for m in messages)


def test_modelroute_openapi_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi", "-o", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["paths"] == openapi.document()["paths"]
    assert printed["components"] == openapi.document()["components"]
