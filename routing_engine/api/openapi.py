"""The OpenAPI 3 description of the MatrixInfer API, generated from the models.

The seeds promise "the complete OpenAPI specification for all MatrixInfer APIs". The five
kinds are Kubernetes custom resources, so their API is the API server's REST interface
for custom resources: list, create, get, replace, merge-patch, delete and watch, per
namespace and across namespaces, plus the `status` subresource (and `scale` for
ModelInfer). Each kind's schema is its CRD's (`routing_engine.api.crd`): the same rules
and the same field descriptions (the seeds' wording) as `kubectl explain` shows, so the
document, the CRDs and the loader cannot disagree.

`modelroute openapi` prints the document; `docs/openapi.yaml` is the checked-in copy (a
test fails when it is out of date: `python -m routing_engine.api.openapi --write`).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from routing_engine.api.crd import CRD_KINDS, NoAliasDumper, crd_for
from routing_engine.api.resources import ModelInfer, Resource

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
_HEADER = "# Generated from routing_engine/api by `python -m routing_engine.api.openapi --write`; do not edit.\n"
_JSON = "application/json"
_MERGE_PATCH = "application/merge-patch+json"
_STATUS_REF = {"$ref": "#/components/schemas/Status"}
# The Kubernetes `Status` an API server answers errors with.
_STATUS_SCHEMA = {
    "type": "object",
    "description": "The API server's answer to a failed request (and to a delete).",
    "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "status": {"type": "string", "description": "Success or Failure"},
        "message": {"type": "string", "description": "What went wrong, for people"},
        "reason": {"type": "string", "description": "Why, as one word: NotFound, AlreadyExists, Conflict, Invalid, ..."},
        "code": {"type": "integer", "description": "The HTTP status code"},
    },
}
_PARAMETERS: dict[str, dict[str, Any]] = {
    "namespace": {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "The object's namespace"},
    "name": {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "The object's name"},
    "labelSelector": {"name": "labelSelector", "in": "query", "schema": {"type": "string"},
                      "description": "Only objects whose labels match, e.g. app=llama,tier!=free"},
    "watch": {"name": "watch", "in": "query", "schema": {"type": "boolean"},
              "description": "Stream changes (ADDED, MODIFIED, DELETED, BOOKMARK events, one JSON object a line) "
                             "instead of listing"},
    "resourceVersion": {"name": "resourceVersion", "in": "query", "schema": {"type": "string"},
                        "description": "List: as of this version; watch: changes after it (410 Gone when it is "
                                       "too old: list again)"},
    "allowWatchBookmarks": {"name": "allowWatchBookmarks", "in": "query", "schema": {"type": "boolean"},
                            "description": "Watch: send BOOKMARK events carrying the latest resourceVersion"},
    "timeoutSeconds": {"name": "timeoutSeconds", "in": "query", "schema": {"type": "integer"},
                       "description": "Watch: end the stream after this many seconds"},
    "dryRun": {"name": "dryRun", "in": "query", "schema": {"type": "string", "enum": ["All"]},
               "description": "Validate (admission included) without storing"},
}
_LIST_PARAMETERS = ["labelSelector", "watch", "resourceVersion", "allowWatchBookmarks", "timeoutSeconds"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _body(schema: dict[str, Any], media: str = _JSON) -> dict[str, Any]:
    return {"required": True, "content": {media: {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {_JSON: {"schema": schema}}
    return answer


def _errors(*codes: int) -> dict[str, Any]:
    texts = {401: "No or invalid credentials", 403: "Not allowed by RBAC", 404: "No such object",
             409: "Already exists, or the resourceVersion is stale (read again and retry)",
             410: "The resourceVersion is too old (list again)",
             422: "Invalid: the message names the field path and the rule"}
    return {str(code): _answer(texts[code], _STATUS_REF) for code in codes}


def _operation(cls: type[Resource], verb: str, summary: str, responses: dict[str, Any], *, part: str = "",
               **extra: Any) -> dict[str, Any]:
    """`verb` + kind + `part` is the operationId: `listModelRoute`, `patchModelRouteStatus`."""
    group = cls.API_VERSION.split("/")[0]
    return {"tags": [group], "operationId": f"{verb}{cls.KIND}{part}", "summary": summary, "responses": responses,
            **extra}


def _paths_of(cls: type[Resource]) -> dict[str, Any]:
    kind, plural = cls.KIND, cls.PLURAL
    base = f"/apis/{cls.API_VERSION}"
    collection = f"{base}/namespaces/{{namespace}}/{plural}"
    item = f"{collection}/{{name}}"
    obj, listed = _ref(kind), _ref(f"{kind}List")
    read_errors = _errors(401, 403, 404)
    write_errors = _errors(401, 403, 404, 409, 422)
    paths: dict[str, Any] = {
        f"{base}/{plural}": {
            "get": _operation(cls, "list", f"List (or watch) {kind}s of every namespace",
                              {"200": _answer(f"The {kind}s (or, with watch, a stream of events)", listed),
                               **_errors(401, 403, 410)},
                              part="ForAllNamespaces", parameters=[_param(p) for p in _LIST_PARAMETERS]),
        },
        collection: {
            "parameters": [_param("namespace")],
            "get": _operation(cls, "list", f"List (or watch) the {kind}s of a namespace",
                              {"200": _answer(f"The {kind}s (or, with watch, a stream of events)", listed),
                               **_errors(401, 403, 410)},
                              parameters=[_param(p) for p in _LIST_PARAMETERS]),
            "post": _operation(cls, "create", f"Create a {kind}",
                               {"201": _answer("Created", obj), **_errors(401, 403, 409, 422)},
                               parameters=[_param("dryRun")], requestBody=_body(obj)),
        },
        item: {
            "parameters": [_param("namespace"), _param("name")],
            "get": _operation(cls, "read", f"Read a {kind}", {"200": _answer(f"The {kind}", obj), **read_errors}),
            "put": _operation(cls, "replace", f"Replace a {kind} (its spec; status is kept)",
                              {"200": _answer("Replaced", obj), **write_errors},
                              parameters=[_param("dryRun")], requestBody=_body(obj)),
            "patch": _operation(cls, "patch", f"Change fields of a {kind} (JSON merge patch; null deletes)",
                                {"200": _answer("Patched", obj), **write_errors},
                                parameters=[_param("dryRun")],
                                requestBody=_body({"type": "object"}, _MERGE_PATCH)),
            "delete": _operation(cls, "delete", f"Delete a {kind}",
                                 {"200": _answer("Deleted", obj), **read_errors}),
        },
        f"{item}/status": {
            "parameters": [_param("namespace"), _param("name")],
            "get": _operation(cls, "read", f"Read the status of a {kind}",
                              {"200": _answer(f"The {kind}", obj), **read_errors}, part="Status"),
            "put": _operation(cls, "replace", f"Replace the status of a {kind} (the controller's)",
                              {"200": _answer("Replaced", obj), **write_errors}, part="Status",
                              requestBody=_body(obj)),
            "patch": _operation(cls, "patch", f"Change the status of a {kind} (JSON merge patch)",
                                {"200": _answer("Patched", obj), **write_errors}, part="Status",
                                requestBody=_body({"type": "object"}, _MERGE_PATCH)),
        },
    }
    if cls is ModelInfer:
        paths[f"{item}/scale"] = {
            "parameters": [_param("namespace"), _param("name")],
            "get": _operation(cls, "read", f"Read the scale of a {kind}",
                              {"200": _answer("The autoscaling/v1 Scale", _ref("Scale")), **read_errors}, part="Scale"),
            "patch": _operation(cls, "patch", f"Change the replicas of a {kind} (what an HPA does)",
                                {"200": _answer("The new Scale", _ref("Scale")), **write_errors}, part="Scale",
                                requestBody=_body({"type": "object"}, _MERGE_PATCH)),
        }
    return paths


def _list_schema(cls: type[Resource]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"A list of {cls.KIND}s",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string", "enum": [f"{cls.KIND}List"]},
            "metadata": {"type": "object", "description": "resourceVersion (to watch from) and continue token",
                         "properties": {"resourceVersion": {"type": "string"}, "continue": {"type": "string"}}},
            "items": {"type": "array", "items": _ref(cls.KIND)},
        },
    }


def document(version: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document (`version`: the API document's version, default the
    installed modelroute's)."""
    if version is None:
        try:
            version = metadata.version("modelroute")
        except metadata.PackageNotFoundError:
            version = "0"
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for cls in CRD_KINDS:
        schemas[cls.KIND] = crd_for(cls)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        schemas[f"{cls.KIND}List"] = _list_schema(cls)
        paths.update(_paths_of(cls))
    schemas["Status"] = _STATUS_SCHEMA
    schemas["Scale"] = {
        "type": "object", "description": "autoscaling/v1 Scale: the replicas of a ModelInfer",
        "properties": {"spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                       "status": {"type": "object", "properties": {"replicas": {"type": "integer"},
                                                                   "selector": {"type": "string"}}}},
    }
    descriptions: dict[str, list[str]] = {}
    for cls in CRD_KINDS:
        descriptions.setdefault(cls.API_VERSION.split("/")[0], []).append(f"{cls.KIND}: {cls.DESCRIPTION}")
    groups = sorted(descriptions)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "MatrixInfer API",
            "version": version,
            "description": "Kubernetes custom resources for AI inference: ModelServer and ModelRoute "
                           "(networking), ModelInfer (workload), Model and AutoscalingPolicy (registry). "
                           "Served by the Kubernetes API server once the CRDs (crds/) are applied; "
                           "authentication and authorization are the cluster's (RBAC).",
        },
        "servers": [{"url": "https://kubernetes.default.svc", "description": "The cluster's API server"}],
        "tags": [{"name": g, "description": "; ".join(descriptions[g])} for g in groups],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": _PARAMETERS,
            "securitySchemes": {"BearerToken": {"type": "http", "scheme": "bearer",
                                                "description": "A Kubernetes bearer token (kubeconfig or service "
                                                               "account)"}},
        },
        "security": [{"BearerToken": []}],
    }


def rendered(version: str = "v1alpha1") -> str:
    """The YAML text; the checked-in copy is versioned by the API (v1alpha1), not by the
    package, so it does not change with every release."""
    return _HEADER + yaml.dump(document(version), Dumper=NoAliasDumper, sort_keys=False, width=1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing_engine.api.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {OPENAPI_FILE} (default: check it)")
    args = parser.parse_args(argv)
    text = rendered()
    if args.write:
        OPENAPI_FILE.parent.mkdir(parents=True, exist_ok=True)
        OPENAPI_FILE.write_text(text)
        print(f"wrote {OPENAPI_FILE}")
        return 0
    if not OPENAPI_FILE.exists() or OPENAPI_FILE.read_text() != text:
        print(f"{OPENAPI_FILE} is out of date")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
