"""The webhook certificate the control plane issues and rotates itself: the Secret, the
caBundle of the webhooks calling its Service, renewal and CA rotation in the order that
never leaves the API server distrusting the certificate served, and every replica
reloading what the Secret holds."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
from typing import Any

from controller.certs import pki
from controller.kubernetes.client import KubeClient
from controller.kubernetes.resources import MUTATING_WEBHOOK, SECRET, VALIDATING_WEBHOOK
from controller.kubernetes.webhook_certs import WebhookCertificates, WebhookTarget, state_of
from controller.kubernetes.webhook_server import ServingTls, serve, watch_files
from tests.kubernetes.fakeapi import ApiFailure, FakeKubeApi
from tests.kubernetes.helpers import eventually, running

NS = "matrixinfer-system"
TARGET = WebhookTarget(namespace=NS)
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def webhook_config(kind: str, name: str, *, service: str = "modelroute-webhook") -> dict[str, Any]:
    hook = {"name": f"{name}.matrixinfer.ai", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": {"service": {"name": service, "namespace": NS, "path": "/validate"}},
            "rules": [{"apiGroups": ["networking.matrixinfer.ai"], "apiVersions": ["v1alpha1"],
                       "operations": ["CREATE"], "resources": ["modelservers"]}]}
    other = {**hook, "name": "someone-else.example.com",
             "clientConfig": {"service": {"name": "other", "namespace": "elsewhere"}, "caBundle": "b3RoZXI="}}
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "webhooks": [hook, other]}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime.datetime:
        return self.now


def bundles(fake: FakeKubeApi) -> dict[str, list[bytes]]:
    """caBundle (as its PEM certificates) of our webhook in each configuration; the other
    webhook's bundle must never change."""
    found = {}
    for rtype, name in ((VALIDATING_WEBHOOK, "modelroute-validate"), (MUTATING_WEBHOOK, "modelroute-defaults")):
        ours, other = fake.read(rtype, "", name)["webhooks"]
        assert other["clientConfig"]["caBundle"] == "b3RoZXI="
        found[name] = pki.split_bundle(base64.b64decode(ours["clientConfig"]["caBundle"]))
    return found


def seed_configs(fake: FakeKubeApi) -> None:
    fake.seed(webhook_config("ValidatingWebhookConfiguration", "modelroute-validate"))
    fake.seed(webhook_config("MutatingWebhookConfiguration", "modelroute-defaults"))


async def test_first_round_issues_a_ca_and_a_certificate_and_writes_the_bundle(
        api: KubeClient, fake_api: FakeKubeApi) -> None:
    seed_configs(fake_api)
    certs = WebhookCertificates(api, TARGET, clock=Clock())
    state = await certs.reconcile()
    stored = state_of(fake_api.read(SECRET, NS, TARGET.secret))
    assert stored == state
    assert fake_api.read(SECRET, NS, TARGET.secret)["type"] == "kubernetes.io/tls"
    assert pki.signed_by(state.serving.cert_pem, state.ca.cert_pem)
    assert pki.names(state.serving.cert_pem) == {
        "modelroute-webhook.matrixinfer-system.svc", "modelroute-webhook.matrixinfer-system.svc.cluster.local",
        "modelroute-webhook.matrixinfer-system", "modelroute-webhook"}
    assert bundles(fake_api) == {"modelroute-validate": [state.ca.cert_pem], "modelroute-defaults": [state.ca.cert_pem]}
    versions = {r["metadata"]["resourceVersion"] for r in fake_api.items(SECRET)}
    assert await certs.reconcile() == state  # nothing due: nothing written
    assert {r["metadata"]["resourceVersion"] for r in fake_api.items(SECRET)} == versions


async def test_serving_certificate_is_renewed_with_a_third_of_its_life_left(api: KubeClient, fake_api: FakeKubeApi) -> None:
    seed_configs(fake_api)
    clock = Clock()
    certs = WebhookCertificates(api, TARGET, clock=clock)
    first = await certs.reconcile()
    clock.now = START + datetime.timedelta(days=59)
    assert (await certs.reconcile()).serving == first.serving
    clock.now = START + datetime.timedelta(days=61)
    renewed = await certs.reconcile()
    assert renewed.serving != first.serving and renewed.ca == first.ca
    assert pki.signed_by(renewed.serving.cert_pem, first.ca.cert_pem)
    assert not pki.due(renewed.serving.cert_pem, now=clock.now)
    assert bundles(fake_api)["modelroute-validate"] == [first.ca.cert_pem]


async def test_ca_rotation_trusts_both_cas_and_reissues_only_once_the_bundle_is_written(
        api: KubeClient, fake_api: FakeKubeApi) -> None:
    seed_configs(fake_api)
    clock = Clock()
    certs = WebhookCertificates(api, TARGET, clock=clock)
    old = await certs.reconcile()
    clock.now = START + datetime.timedelta(days=2500)  # less than a third of ten years left

    def someone_edits_the_config() -> None:  # the bundle write then conflicts
        fake_api.write(VALIDATING_WEBHOOK, "", "modelroute-validate",
                       lambda c: c["metadata"].setdefault("labels", {}).update({"edited": "yes"}))

    fake_api.before("PUT", VALIDATING_WEBHOOK, someone_edits_the_config)
    pending = await certs.reconcile()
    assert pending.ca != old.ca and pending.trusted == (pending.ca.cert_pem, old.ca.cert_pem)
    assert pending.serving == old.serving  # not re-issued: the API server does not trust the new CA yet
    assert bundles(fake_api)["modelroute-validate"] == [old.ca.cert_pem]

    rotated = await certs.reconcile()
    assert rotated.ca == pending.ca
    assert bundles(fake_api) == {n: [pending.ca.cert_pem, old.ca.cert_pem]
                                 for n in ("modelroute-validate", "modelroute-defaults")}
    assert pki.signed_by(rotated.serving.cert_pem, pending.ca.cert_pem)

    clock.now = START + datetime.timedelta(days=3651)  # the old CA expired: dropped from the bundle
    later = await certs.reconcile()
    assert later.trusted == (pending.ca.cert_pem,)
    assert bundles(fake_api)["modelroute-defaults"] == [pending.ca.cert_pem]


async def test_an_unusable_secret_is_replaced(api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": TARGET.secret, "namespace": NS},
                   "type": "kubernetes.io/tls", "data": {"tls.crt": "bm9wZQ==", "tls.key": "bm9wZQ=="}})
    state = await WebhookCertificates(api, TARGET, clock=Clock()).reconcile()
    assert state_of(fake_api.read(SECRET, NS, TARGET.secret)) == state


async def test_every_replica_serves_what_the_secret_holds_and_reloads_it(api: KubeClient, fake_api: FakeKubeApi) -> None:
    seed_configs(fake_api)
    leader = WebhookCertificates(api, TARGET)  # the real clock: the handshakes check validity
    tls = ServingTls()
    runner, port = await serve(host="127.0.0.1", port=0, tls=tls)

    async def handshake(ca_pems: list[bytes]) -> bytes:
        """The certificate served, verified as the API server verifies it."""
        context = ssl.create_default_context(cadata=pki.join_bundle(ca_pems).decode())
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                  server_hostname="modelroute-webhook.matrixinfer-system.svc")
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()
            await writer.wait_closed()
        return ssl.DER_cert_to_PEM_cert(der).encode()

    try:
        async with running(WebhookCertificates(api, TARGET).follower(tls.load).run()):
            assert not tls.ready
            first = await leader.reconcile()
            await eventually(lambda: tls.current == first.serving, what="the first certificate loaded")
            assert pki.load(await handshake(bundles(fake_api)["modelroute-validate"])) == pki.load(first.serving.cert_pem)
            renewed = pki.new_serving(first.ca, TARGET.dns_names(), now=datetime.datetime.now(datetime.UTC))

            def renew(secret: dict[str, Any]) -> None:  # as the leader does when the certificate is due
                secret["data"].update({"tls.crt": base64.b64encode(renewed.cert_pem).decode(),
                                       "tls.key": base64.b64encode(renewed.key_pem).decode()})

            fake_api.write(SECRET, NS, TARGET.secret, renew)
            await eventually(lambda: tls.current == renewed, what="the renewed certificate loaded")
            served = await handshake(bundles(fake_api)["modelroute-validate"])
            assert pki.load(served) == pki.load(renewed.cert_pem)
    finally:
        await runner.cleanup()


async def test_leading_reconciles_until_cancelled_and_survives_api_errors(api: KubeClient, fake_api: FakeKubeApi) -> None:
    rounds: list[float] = []

    async def sleep(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) == 1:
            fake_api.seed(webhook_config("ValidatingWebhookConfiguration", "modelroute-validate"))
        await asyncio.sleep(0)

    def etcd_down() -> None:
        raise ApiFailure(500, "InternalError", "etcdserver: request timed out")

    fake_api.before("GET", SECRET, etcd_down)
    certs = WebhookCertificates(api, TARGET, check_every=7.0)
    async with running(certs.lead(sleep=sleep)):
        await eventually(lambda: len(rounds) >= 3, what="three rounds")
    assert set(rounds) == {7.0}
    assert fake_api.read(SECRET, NS, TARGET.secret) is not None
    hook = fake_api.read(VALIDATING_WEBHOOK, "", "modelroute-validate")["webhooks"][0]
    assert hook["clientConfig"]["caBundle"]


async def test_certificate_files_from_another_issuer_are_loaded_and_reloaded(tmp_path: Any) -> None:
    """The cert-manager overlay: a mounted Secret, swapped by the kubelet when renewed."""
    now = datetime.datetime.now(datetime.UTC)
    ca = pki.new_ca("cert-manager-ca", now=now)
    first, second = (pki.new_serving(ca, TARGET.dns_names(), now=now) for _ in range(2))

    def mount(pair: pki.KeyPair) -> None:
        (tmp_path / "tls.crt").write_bytes(pair.cert_pem)
        (tmp_path / "tls.key").write_bytes(pair.key_pem)

    tls = ServingTls()
    async with running(watch_files(tmp_path, tls, every=0.02)):
        await asyncio.sleep(0.05)
        assert not tls.ready  # nothing mounted yet: every handshake fails, /readyz says not ready
        mount(first)
        await eventually(lambda: tls.current == first, what="the mounted certificate")
        (tmp_path / "tls.key").write_bytes(second.key_pem)  # half-way through a swap: not loaded
        await asyncio.sleep(0.1)
        assert tls.current == first
        mount(second)
        await eventually(lambda: tls.current == second, what="the renewed certificate")
