"""The real-cluster suite: runs only when KUBECONFIG is set (see deploy/README.md), and
is deselected otherwise — never skipped to look green. It needs the CRDs installed
(`kubectl apply -f crds/`) and rights to create a namespace; everything happens in a
fresh namespace `modelroute-e2e-<random>`, deleted afterwards. No GPU node is needed:
it checks the Deployment the controller writes, not that pods get scheduled.

The same suite runs against the fake API (`python -m tests.kubernetes.fakeapi`, a
kubeconfig pointing at it), which is how it was checked without a cluster."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from controller.kubernetes.client import KubeClient
from controller.kubernetes.errors import NotFound
from controller.kubernetes.provider import KubernetesProvider
from controller.kubernetes.resources import (DEPLOYMENT, ENGINE_KINDS, HPA, MODEL, MODEL_INFER, MODEL_ROUTE,
                                             NAMESPACE, SECRET, SERVICE)
from controller.kubernetes.status_writer import StatusWriter
from controller.kubernetes.workload_controller import WorkloadController
from routing_engine.world import ConditionView, ObjectStatus
from tests.kubernetes.helpers import model, model_infer, route, running
from tests.kubernetes.test_provider import Published

pytestmark = pytest.mark.kubernetes


@pytest.fixture
async def cluster() -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig(os.environ["KUBECONFIG"]) as client:
        for kind, rtype in ENGINE_KINDS.items():
            if rtype is SECRET:
                continue
            try:
                await client.list(rtype, namespace="default")
            except NotFound:
                pytest.fail(f"{kind} is not served by this cluster: run `kubectl apply -f crds/` first")
        yield client


@pytest.fixture
async def namespace(cluster: KubeClient) -> AsyncIterator[str]:
    name = f"modelroute-e2e-{uuid.uuid4().hex[:8]}"
    await cluster.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        await cluster.delete(NAMESPACE, "", name)


def in_ns(doc: dict, namespace: str) -> dict:
    doc["metadata"]["namespace"] = namespace
    return doc


async def test_kubectl_apply_reaches_the_provider(cluster: KubeClient, namespace: str, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is required"
    published = Published()
    doc = route("e2e-route", path="/v1/e2e", server="llama-server")
    del doc["metadata"]["namespace"]
    manifest = tmp_path / "route.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    async with running(KubernetesProvider(cluster, namespace=namespace).run(published)):
        assert (await published.next(30)).objects == ()
        # --validate=false: the fake API (which also runs this suite) publishes no OpenAPI; a
        # real API server still checks the object against the CRD's structural schema.
        proc = await asyncio.create_subprocess_exec(kubectl, "apply", "--validate=false", "-n", namespace,
                                                    "-f", str(manifest),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        (seen,) = (await published.next(30)).objects
        assert seen.key == ("ModelRoute", namespace, "e2e-route")


async def test_model_infer_becomes_gpu_deployment_service_hpa(cluster: KubeClient, namespace: str) -> None:
    async with running(WorkloadController(cluster, namespace=namespace).run()):
        await cluster.create(MODEL, in_ns(model(), namespace))
        await cluster.create(MODEL_INFER, in_ns(model_infer(
            resources={"limits": {"nvidia.com/gpu": 1}},
            autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 3}), namespace))

        async def exists(rtype: object) -> bool:
            try:
                await cluster.get(rtype, namespace, "llama-infer")  # type: ignore[arg-type]
                return True
            except NotFound:
                return False

        for rtype in (DEPLOYMENT, SERVICE, HPA):
            for _ in range(300):
                if await exists(rtype):
                    break
                await asyncio.sleep(0.1)
            assert await exists(rtype), f"{rtype} not created"
        deploy = await cluster.get(DEPLOYMENT, namespace, "llama-infer")
        limits = deploy["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        phase: list[str] = []

        async def poll_phase() -> None:
            obj = await cluster.get(MODEL_INFER, namespace, "llama-infer")
            phase[:] = [(obj.get("status") or {}).get("phase", "")]

        for _ in range(300):
            await poll_phase()
            if phase[0]:
                break
            await asyncio.sleep(0.1)
        assert phase[0] in ("Pending", "Running")


async def test_status_conflict_is_retried_on_the_real_api(cluster: KubeClient, namespace: str) -> None:
    await cluster.create(MODEL_ROUTE, in_ns(route("conflicted"), namespace))
    stale = await cluster.get(MODEL_ROUTE, namespace, "conflicted")
    await cluster.patch_status(MODEL_ROUTE, namespace, "conflicted", {"status": {"canary": {"canaryWeight": 20}}})
    writer = StatusWriter(cluster)
    status = ObjectStatus("Active", (ConditionView("Accepted", "True", "Accepted"),))
    assert await writer.write(MODEL_ROUTE, namespace, "conflicted", status, current=stale)
    final = (await cluster.get(MODEL_ROUTE, namespace, "conflicted"))["status"]
    assert final["phase"] == "Active" and final["canary"] == {"canaryWeight": 20}
