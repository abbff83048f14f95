"""`modelroute sidecar-cert NAMESPACE`: a sidecar certificate for one namespace, from the
cluster's xDS CA, whose identity the control plane serves that namespace's scope only."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from controller.certs import pki
from controller.kubernetes.client import KubeClient
from controller.kubernetes.resources import SECRET
from controller.kubernetes.xds_certs import XdsCertificates
from modelroute.commands import sidecar_cert
from tests.kubernetes.fakeapi import FakeKubeApi
from xds_server.identity import Peer, authorized_group, sidecar_identity
from tests.xds.test_identity import node

NS = "matrixinfer-system"


def args(tmp_path: Path, fake_api: FakeKubeApi, namespace: str, out: Path | None = None) -> argparse.Namespace:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: \"{fake_api.url}\"}}}}]\n"
        "users: [{name: me, user: {token: t}}]\ncontexts: [{name: fake, context: {cluster: fake, user: me}}]\n")
    return argparse.Namespace(namespace=namespace, kubeconfig=str(kubeconfig), system_namespace=NS, out=out)


async def test_a_sidecar_certificate_is_issued_for_one_namespace(api: KubeClient, fake_api: FakeKubeApi,
                                                                 tmp_path: Path) -> None:
    assert await sidecar_cert._run(args(tmp_path, fake_api, "team-a")) == 1  # no CA yet: said, not a traceback
    state = await XdsCertificates(api, NS).reconcile()
    assert await sidecar_cert._run(args(tmp_path, fake_api, "team-a")) == 0
    secret = fake_api.read(SECRET, "team-a", sidecar_cert.SECRET)
    assert secret is not None
    cert = base64.b64decode(secret["data"]["tls.crt"])
    assert pki.uris(cert) == {sidecar_identity("team-a")} and pki.signed_by(cert, state.signing.cert_pem)
    assert authorized_group(node("gateway"), Peer("", sidecar_identity("team-a"))) == 'sidecar:{"namespaces":["team-a"]}'
    assert await sidecar_cert._run(args(tmp_path, fake_api, "team-a")) == 0  # again: renewed in place
    renewed = base64.b64decode(fake_api.read(SECRET, "team-a", sidecar_cert.SECRET)["data"]["tls.crt"])
    assert renewed != cert
    out = tmp_path / "files"
    assert await sidecar_cert._run(args(tmp_path, fake_api, "team-b", out)) == 0
    assert pki.uris((out / "tls.crt").read_bytes()) == {sidecar_identity("team-b")}
    assert (out / "tls.key").stat().st_mode & 0o777 == 0o600
