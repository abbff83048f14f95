"""The real kubectl against the fake API: `kubectl apply -f route.yaml` creates and then
changes a route, and the provider publishes each version. Proves the fake's discovery
and apply paths (GET, POST, merge PATCH) are what kubectl really uses."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
import yaml

from controller.kubernetes.client import KubeClient
from controller.kubernetes.provider import KubernetesProvider
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import route, running
from tests.kubernetes.test_provider import Published

KUBECTL = shutil.which("kubectl")


async def kubectl(server: str, tmp_path: Path, *args: str) -> str:
    assert KUBECTL, "kubectl is required (the project's machines have /usr/bin/kubectl)"
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--server", server, "--cache-dir", str(tmp_path / "kube-cache"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KUBECONFIG": os.devnull})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.slow
async def test_kubectl_apply_changes_what_the_provider_publishes(
        api: KubeClient, fake_api: FakeKubeApi, tmp_path: Path) -> None:
    published = Published()
    manifest = tmp_path / "route.yaml"
    doc = route("canary-route", path="/v1/chat", server="llama-server")
    del doc["metadata"]["namespace"]
    async with running(KubernetesProvider(api).run(published)):
        assert (await published.next()).objects == ()
        manifest.write_text(yaml.safe_dump(doc))
        out = await kubectl(fake_api.url, tmp_path, "apply", "--validate=false", "-f", str(manifest))
        assert "modelroute.networking.matrixinfer.ai/canary-route created" in out
        (created,) = (await published.next()).objects
        assert created.key == ("ModelRoute", "default", "canary-route")
        assert created.spec.path == "/v1/chat"  # type: ignore[attr-defined]

        doc["spec"]["path"] = "/v1/chat2"
        manifest.write_text(yaml.safe_dump(doc))
        out = await kubectl(fake_api.url, tmp_path, "apply", "--validate=false", "-f", str(manifest))
        assert "configured" in out
        (changed,) = (await published.next()).objects
        assert changed.spec.path == "/v1/chat2"  # type: ignore[attr-defined]

        got = await kubectl(fake_api.url, tmp_path, "get", "mr", "canary-route", "-o", "jsonpath={.spec.path}")
        assert got == "/v1/chat2"
