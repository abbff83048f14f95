"""The fake API server calls admission webhooks as kube-apiserver does: HTTPS to the
webhook Service checked against `caBundle`, `failurePolicy` deciding what an unreachable
or untrusted webhook means, denials with the webhook's code and message, mutations
applied before validation, rules deciding who is called."""

from __future__ import annotations

import base64
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.certs import pki
from controller.kubernetes.client import KubeClient
from controller.kubernetes.errors import ApiError
from controller.kubernetes.resources import MODEL_INFER, MODEL_SERVER, SERVICE, VALIDATING_WEBHOOK
from controller.kubernetes.webhook_certs import WebhookTarget
from controller.kubernetes.webhook_server import ServingTls, serve
from tests.kubernetes.fake_admission import apply_json_patch
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import model_infer, server

NS = "matrixinfer-system"
NOW = datetime.datetime.now(datetime.UTC)


def hook_config(kind: str, *, path: str, policy: str, ca: bytes, resources: list[str]) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": f"test-{path[1:]}"},
            "webhooks": [{"name": f"{path[1:]}.matrixinfer.ai", "admissionReviewVersions": ["v1"],
                          "sideEffects": "None", "failurePolicy": policy, "timeoutSeconds": 5,
                          "clientConfig": {"service": {"name": "modelroute-webhook", "namespace": NS, "path": path},
                                           "caBundle": base64.b64encode(ca).decode()},
                          "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                                     "resources": resources}]}]}


@pytest.fixture
async def world() -> AsyncIterator[tuple[FakeKubeApi, KubeClient, pki.KeyPair, list[int]]]:
    """A fake API server whose webhook Service leads to a real webhook server over TLS."""
    ca = pki.new_ca("test-ca", now=NOW)
    tls = ServingTls()
    tls.load(pki.new_serving(ca, WebhookTarget(namespace=NS).dns_names(), now=NOW))
    runner, port = await serve(host="127.0.0.1", port=0, tls=tls)
    calls: list[int] = []

    def resolve(namespace: str, name: str, service_port: int) -> tuple[str, int]:
        calls.append(service_port)
        return "127.0.0.1", port

    fake = FakeKubeApi(resolve=resolve)
    await fake.start()
    fake.seed({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "modelroute-webhook", "namespace": NS},
               "spec": {"ports": [{"port": 443, "targetPort": "webhook"}]}})
    try:
        async with KubeClient(fake.url, request_timeout=10) as api:
            yield fake, api, ca, calls
    finally:
        await fake.stop()
        await runner.cleanup()


def bad_server() -> dict[str, Any]:
    doc = server("bad", infer="i")
    doc["spec"]["routing"]["timeout"] = "30"
    return doc


async def test_a_trusted_webhook_denies_with_its_code_and_message(world: Any) -> None:
    fake, api, ca, calls = world
    fake.seed(hook_config("ValidatingWebhookConfiguration", path="/validate", policy="Fail", ca=ca.cert_pem,
                          resources=["modelservers"]))
    with pytest.raises(ApiError) as refused:
        await api.create(MODEL_SERVER, bad_server())
    assert refused.value.code == 422
    assert refused.value.message.startswith('admission webhook "validate.matrixinfer.ai" denied the request: ')
    assert "spec.routing.timeout" in refused.value.message
    assert fake.read(MODEL_SERVER, "default", "bad") is None
    await api.create(MODEL_SERVER, server("good", infer="i"))  # allowed
    assert calls == [443, 443]
    await api.create(MODEL_INFER, model_infer())  # no rule for modelinfers: not called
    assert len(calls) == 2 and fake.admission.calls == [("validate.matrixinfer.ai", "denied"),
                                                        ("validate.matrixinfer.ai", "allowed")]


async def test_an_untrusted_certificate_refuses_under_fail_and_passes_under_ignore(world: Any) -> None:
    fake, api, _, _ = world
    stranger = pki.new_ca("another-ca", now=NOW)
    fake.seed(hook_config("ValidatingWebhookConfiguration", path="/validate", policy="Fail", ca=stranger.cert_pem,
                          resources=["modelservers"]))
    with pytest.raises(ApiError) as refused:
        await api.create(MODEL_SERVER, server("good", infer="i"))
    assert refused.value.code == 500
    assert 'failed calling webhook "validate.matrixinfer.ai"' in refused.value.message
    assert "certificate verify failed" in refused.value.message
    fake.write(VALIDATING_WEBHOOK, "", "test-validate", lambda c: c["webhooks"][0].update({"failurePolicy": "Ignore"}))
    await api.create(MODEL_SERVER, bad_server())  # unchecked: the webhook could not be asked


async def test_a_missing_service_is_a_failed_call(world: Any) -> None:
    fake, api, ca, _ = world
    fake.remove(SERVICE, NS, "modelroute-webhook")
    fake.seed(hook_config("ValidatingWebhookConfiguration", path="/validate", policy="Fail", ca=ca.cert_pem,
                          resources=["*"]))
    with pytest.raises(ApiError) as refused:
        await api.create(MODEL_SERVER, server("good", infer="i"))
    assert 'service "modelroute-webhook" not found' in refused.value.message


async def test_mutation_is_applied_before_validation_and_stored(world: Any) -> None:
    fake, api, ca, _ = world
    fake.seed(hook_config("MutatingWebhookConfiguration", path="/mutate", policy="Ignore", ca=ca.cert_pem,
                          resources=["modelservers", "modelinfers"]))
    fake.seed(hook_config("ValidatingWebhookConfiguration", path="/validate", policy="Fail", ca=ca.cert_pem,
                          resources=["modelservers"]))
    await api.create(MODEL_SERVER, server("good", infer="i"))
    stored = fake.read(MODEL_SERVER, "default", "good")
    assert stored["spec"]["service"]["targetPort"] == 8080 and stored["spec"]["service"]["type"] == "ClusterIP"
    await api.create(MODEL_INFER, model_infer())
    assert fake.read(MODEL_INFER, "default", "llama-infer")["spec"]["replicas"] == 1
    assert [name for name, _ in fake.admission.calls] == [
        "mutate.matrixinfer.ai", "validate.matrixinfer.ai", "mutate.matrixinfer.ai"]


def test_json_patch_follows_rfc_6902() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    ops = [{"op": "add", "path": "/a/b/1", "value": 9}, {"op": "add", "path": "/a/b/-", "value": 3},
           {"op": "replace", "path": "/c", "value": "y"}, {"op": "copy", "from": "/c", "path": "/d"},
           {"op": "move", "from": "/d", "path": "/e~1f"}, {"op": "remove", "path": "/a/b/0"},
           {"op": "test", "path": "/c", "value": "y"}]
    assert apply_json_patch(doc, ops) == {"a": {"b": [9, 2, 3]}, "c": "y", "e/f": "y"}
    assert doc == {"a": {"b": [1, 2]}, "c": "x"}  # the input is not changed
    with pytest.raises(ValueError):
        apply_json_patch(doc, [{"op": "test", "path": "/c", "value": "z"}])
