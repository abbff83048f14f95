"""Only the Secrets ModelServers reference reach the control plane's memory and the
engine: per-namespace watches filtered by the API server (types no server can use) and by
name; a new reference is read before the next publish; a namespace the control plane
may not read holds up nobody else."""

from __future__ import annotations

from typing import Any

from controller.kubernetes.client import KubeClient
from controller.kubernetes.provider import KubernetesProvider
from controller.kubernetes.resources import MODEL_SERVER, SECRET
from controller.kubernetes.secrets import FIELD_SELECTOR, secret_refs
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import running, server
from tests.kubernetes.test_provider import Published, names


def secret(name: str, namespace: str = "default", type_: str = "Opaque", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": type_, "metadata": {"name": name, "namespace": namespace},
            "stringData": data or {"k": "v"}}


def tls_server(name: str, secret_name: str, namespace: str = "default") -> dict[str, Any]:
    doc = server(name, infer="i", path=f"/v1/{name}")
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["tls"] = {"enabled": True, "secretName": secret_name}
    return doc


def test_references_of_tls_jwks_and_api_keys_per_namespace() -> None:
    jwt = server("j", infer="i")
    jwt["spec"]["authentication"] = {"enabled": True, "type": "jwt",
                                     "config": {"issuer": "x", "jwksSecretName": "jwks"}}
    keys = server("k", infer="i")
    keys["metadata"]["namespace"] = "team"
    keys["spec"]["authentication"] = {"enabled": True, "type": "apiKey", "config": {"secretName": "keys"}}
    assert secret_refs([tls_server("t", "cert"), jwt, keys, server("plain", infer="i")]) == {
        "default": frozenset({"cert", "jwks"}), "team": frozenset({"keys"})}


async def test_only_referenced_secrets_are_published_and_kept(api: KubeClient, fake_api: FakeKubeApi) -> None:
    for doc in (secret("cert"), secret("unrelated"), secret("token", type_="kubernetes.io/service-account-token"),
                secret("cert", namespace="elsewhere"), tls_server("a", "cert")):
        fake_api.seed(doc)
    published = Published()
    provider = KubernetesProvider(api)
    async with running(provider.run(published)):
        first = await published.next()
        assert names(first, "Secret") == ["cert"]
        assert [o.metadata.namespace for o in first.objects if o.KIND == "Secret"] == ["default"]
        assert sorted(o["metadata"]["name"] for o in provider.secrets.objects()) == ["cert"]
        # Never a cluster-wide list or watch of Secrets; the API server drops the useless types.
        secret_paths = {path for _, path in fake_api.requests if path.endswith("/secrets")}
        assert secret_paths == {"/api/v1/namespaces/default/secrets"}
        assert "kubernetes.io/service-account-token" in FIELD_SELECTOR

        fake_api.seed(secret("jwks", namespace="team"))
        jwt = server("b", infer="i", path="/v1/b")
        jwt["metadata"]["namespace"] = "team"
        jwt["spec"]["authentication"] = {"enabled": True, "type": "jwt",
                                         "config": {"issuer": "x", "jwksSecretName": "jwks"}}
        fake_api.seed(jwt)
        snapshot = await published.next()
        assert sorted((o.metadata.namespace, o.metadata.name) for o in snapshot.objects if o.KIND == "Secret") == [
            ("default", "cert"), ("team", "jwks")]  # in the very snapshot that has the new server

        fake_api.remove(MODEL_SERVER, "default", "a")
        snapshot = await published.next()
        assert [o.metadata.name for o in snapshot.objects if o.KIND == "Secret"] == ["jwks"]
        assert provider.secrets.wanted == {"team": frozenset({"jwks"})}

        fake_api.write(SECRET, "team", "jwks", lambda s: s["stringData"].update({"k": "rotated"}))
        rotated = await published.next()
        (jwks,) = [o for o in rotated.objects if o.KIND == "Secret"]
        assert jwks.value("k") == b"rotated"


async def test_a_namespace_the_control_plane_cannot_read_holds_up_nobody(api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.seed(secret("cert"))
    fake_api.seed(tls_server("a", "cert"))
    fake_api.seed(tls_server("forbidden", "cert", namespace="locked"))

    fake_api.forbid(SECRET, "locked")  # RBAC bound per namespace, not for this one
    published = Published()
    async with running(KubernetesProvider(api).run(published)):
        first = await published.next()
        assert [(o.metadata.namespace, o.metadata.name) for o in first.objects if o.KIND == "Secret"] == [
            ("default", "cert")]
        assert {o.metadata.name for o in first.objects if o.KIND == "ModelServer"} == {"a", "forbidden"}
