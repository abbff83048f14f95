"""AdmissionReview v1: the validating webhook denies with the loader's field-path
messages, the mutating webhook adds only absent defaults, both over HTTP."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp

from controller.kubernetes import admission, webhook_server
from routing_engine.plugins import extension_models, with_builtin
from tests.kubernetes.helpers import model_infer, route, server
from tests.support.plugins import RequestHeadersPlugin

EXTENSIONS = extension_models(with_builtin([RequestHeadersPlugin()]))


def with_extensions(extensions: dict[str, Any]) -> dict[str, Any]:
    doc = server("s", infer="i")
    doc["spec"]["extensions"] = extensions
    return doc


def review(obj: dict[str, Any] | None, operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "operation": operation,
                        "namespace": "default", "name": (obj or {}).get("metadata", {}).get("name"),
                        "object": obj}}


def test_valid_object_is_allowed() -> None:
    response = admission.validate(review(route("r1")))["response"]
    assert response == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}


def test_invalid_object_is_denied_with_every_rule() -> None:
    bad = server("s", infer="i")
    bad["spec"]["routing"]["timeout"] = "30"
    bad["spec"]["service"]["port"] = 70000
    response = admission.validate(review(bad))["response"]
    assert response["allowed"] is False and response["status"]["code"] == 422
    lines = response["status"]["message"].splitlines()
    assert len(lines) == 2
    assert any("ModelServer default/s: spec.routing.timeout" in ln and "30s" in ln for ln in lines)
    assert any("spec.service.port" in ln for ln in lines)


def test_the_probes_gaps_are_denied_like_validate_denies_them() -> None:
    """The admission webhook shares the models' rules: what an acceptance probe found
    `validate` (and so `kubectl apply`) let through is denied, naming object, field, rule."""
    keyed = server("s", infer="i")
    keyed["spec"]["authentication"] = {"enabled": True, "type": "apiKey",
                                       "config": {"secretName": "keys", "header": "x api key"}}
    canary = route("r1")
    canary["spec"]["routes"] = [{"destination": {"modelServerRef": {"name": "a"}}}] * 2
    canary["spec"]["canary"] = {"enabled": True}
    gpus = model_infer(name="i", resources={"limits": {"nvidia.com/gpu": "1.5"}})
    expected = {
        "keyed": 'ModelServer default/s: spec.authentication.config.header: "x api key" is not an HTTP header name',
        "canary": "ModelRoute default/r1: spec.routes[1].destination.modelServerRef: the canary destination is "
                  "ModelServer default/a, as is the stable one (spec.routes[0])",
        "gpus": 'ModelInfer default/i: spec.resources.limits["nvidia.com/gpu"]: "1.5" must be a whole number',
    }
    for name, obj in (("keyed", keyed), ("canary", canary), ("gpus", gpus)):
        response = admission.validate(review(obj))["response"]
        assert response["allowed"] is False and response["status"]["code"] == 422, name
        assert expected[name] in response["status"]["message"], response["status"]["message"]


def test_server_extensions_are_checked_against_the_installed_plugins() -> None:
    """As `modelroute validate` checks them: a key no plugin owns, or a value its plugin's
    model refuses, is denied with the field path; a good one is allowed."""
    good = with_extensions({"requestHeaders": {"add": {"x-tier": "gold"}}})
    assert admission.validate(review(good), EXTENSIONS)["response"]["allowed"] is True
    refused = admission.validate(review(with_extensions({"requestHeaders": {"add": {"X-Tier": "gold"}},
                                                         "requestHeader": {}})), EXTENSIONS)["response"]
    assert refused["allowed"] is False and refused["status"]["code"] == 422
    lines = refused["status"]["message"].splitlines()
    assert len(lines) == 2
    assert any(ln.startswith("ModelServer default/s: spec.extensions.requestHeaders.add") and "lower case" in ln
               for ln in lines), lines
    assert any("spec.extensions.requestHeader:" in ln and "did you mean requestHeaders?" in ln for ln in lines), lines
    # An edit of an accepted server (kubectl apply of a changed object) is checked alike.
    edited = admission.validate(review(with_extensions({"requestHeader": {}}), "UPDATE"), EXTENSIONS)["response"]
    assert edited["allowed"] is False and "did you mean requestHeaders?" in edited["status"]["message"]
    # Without the plugins' models (as before they were passed) the keys are not checked.
    assert admission.validate(review(with_extensions({"requestHeader": {}})))["response"]["allowed"] is True


def test_delete_is_always_allowed() -> None:
    assert admission.validate(review(None, "DELETE"))["response"]["allowed"] is True


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def test_mutate_adds_only_absent_defaults() -> None:
    ms = server("s", infer="i")
    ms["spec"]["routing"]["timeout"] = "30s"  # the user's value stays
    ops = decoded_patch(admission.mutate(review(ms))["response"])
    assert ops == [{"op": "add", "path": "/spec/service/targetPort", "value": 8080}]
    ops = decoded_patch(admission.mutate(review(model_infer()))["response"])
    assert ops == [{"op": "add", "path": "/spec/replicas", "value": 1}]
    assert "patch" not in admission.mutate(review(model_infer(replicas=3)))["response"]


async def test_webhook_over_http() -> None:
    runner, port = await webhook_server.serve(host="127.0.0.1", port=0, tls=None, extensions=EXTENSIONS)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            bad = route("r1")
            bad["spec"]["routes"][0]["weight"] = 101
            async with http.post(f"http://127.0.0.1:{port}/validate", json=review(bad)) as resp:
                body = await resp.json()
            assert body["kind"] == "AdmissionReview" and body["response"]["allowed"] is False
            assert "spec.routes[0].weight" in body["response"]["status"]["message"]
            async with http.post(f"http://127.0.0.1:{port}/validate",
                                 json=review(with_extensions({"requestHeaders": {"add": {}}}))) as resp:
                body = await resp.json()
            assert body["response"]["allowed"] is False
            assert "spec.extensions.requestHeaders.add" in body["response"]["status"]["message"]
            async with http.post(f"http://127.0.0.1:{port}/mutate", data=b"{nope") as resp:
                assert resp.status == 400
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
