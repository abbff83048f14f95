"""The adapter against the fake API: CRUD, typed errors, list+watch resumption, 410,
status subresource semantics."""

from __future__ import annotations

import asyncio

import pytest

from controller.kubernetes import errors
from controller.kubernetes.client import KubeClient
from controller.kubernetes.interface import WatchEvent
from controller.kubernetes.resources import DEPLOYMENT, MODEL_ROUTE, SECRET
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import route


async def test_create_get_list_delete(api: KubeClient) -> None:
    created = await api.create(MODEL_ROUTE, route("r1"))
    assert created["metadata"]["resourceVersion"] and created["metadata"]["generation"] == 1
    got = await api.get(MODEL_ROUTE, "default", "r1")
    assert got["spec"]["path"] == "/v1/a"
    listed = await api.list(MODEL_ROUTE)
    assert [o["metadata"]["name"] for o in listed.items] == ["r1"]
    assert listed.items[0]["kind"] == "ModelRoute"
    assert int(listed.resource_version) >= int(created["metadata"]["resourceVersion"])
    await api.delete(MODEL_ROUTE, "default", "r1")
    with pytest.raises(errors.NotFound):
        await api.get(MODEL_ROUTE, "default", "r1")


async def test_typed_errors_for_conflicts(api: KubeClient) -> None:
    first = await api.create(MODEL_ROUTE, route("r1"))
    with pytest.raises(errors.AlreadyExists):
        await api.create(MODEL_ROUTE, route("r1"))
    newer = dict(first, spec={**first["spec"], "path": "/v1/b"})
    await api.replace(MODEL_ROUTE, newer)
    stale = dict(first, spec={**first["spec"], "path": "/v1/c"})
    with pytest.raises(errors.Conflict):
        await api.replace(MODEL_ROUTE, stale)
    assert (await api.get(MODEL_ROUTE, "default", "r1"))["spec"]["path"] == "/v1/b"


async def test_status_subresource_is_separate_from_spec(api: KubeClient) -> None:
    await api.create(MODEL_ROUTE, route("r1"))
    patched = await api.patch_status(MODEL_ROUTE, "default", "r1", {"status": {"phase": "Active"}})
    assert patched["status"] == {"phase": "Active"} and patched["metadata"]["generation"] == 1
    # A main-resource write cannot change status; a spec change bumps generation.
    after = await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/z"}, "status": {"phase": "X"}})
    assert after["status"] == {"phase": "Active"} and after["metadata"]["generation"] == 2
    # A status write cannot change the spec.
    after["spec"]["path"] = "/v1/ignored"
    after["status"] = {"phase": "Failed"}
    final = await api.replace_status(MODEL_ROUTE, after)
    assert final["spec"]["path"] == "/v1/z" and final["status"] == {"phase": "Failed"}


async def test_watch_resumes_after_resource_version(api: KubeClient, fake_api: FakeKubeApi) -> None:
    await api.create(MODEL_ROUTE, route("old"))
    listed = await api.list(MODEL_ROUTE)
    await api.create(MODEL_ROUTE, route("new"))
    await api.delete(MODEL_ROUTE, "default", "old")
    secret = await api.create(SECRET, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    seen: list[WatchEvent] = []

    async def consume() -> None:
        async for event in api.watch(MODEL_ROUTE, resource_version=listed.resource_version):
            seen.append(event)
            if len(seen) == 3:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    fake_api.bookmark()
    await asyncio.wait_for(task, 5)
    assert [(e.type, e.object["metadata"]["name"] if e.type != "BOOKMARK" else None) for e in seen] == [
        ("ADDED", "new"), ("DELETED", "old"), ("BOOKMARK", None)]
    # A bookmark carries the newest resourceVersion, even one from another resource type.
    assert seen[2].resource_version == secret["metadata"]["resourceVersion"]


async def test_watch_from_compacted_version_raises_gone(api: KubeClient, fake_api: FakeKubeApi) -> None:
    listed = await api.list(MODEL_ROUTE)
    await api.create(MODEL_ROUTE, route("r1"))
    fake_api.compact()
    with pytest.raises(errors.Gone):
        async for _ in api.watch(MODEL_ROUTE, resource_version=listed.resource_version):
            pass


async def test_watch_ends_at_server_timeout(api: KubeClient) -> None:
    events = [e async for e in api.watch(DEPLOYMENT, resource_version="0", timeout_seconds=1)]
    assert events == []


async def test_connection_refused_is_an_api_error() -> None:
    from tests.support import free_port

    async with KubeClient(f"http://127.0.0.1:{free_port()}", request_timeout=2) as client:
        with pytest.raises(errors.ApiError) as info:
            await client.list(SECRET)
    assert info.value.code == 0


async def test_from_kubeconfig_uses_server_and_token(fake_api: FakeKubeApi, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake_api.url}}],
        "users": [{"name": "me", "user": {"token": "s3cr3t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}]}))
    async with KubeClient.from_kubeconfig(str(kubeconfig)) as client:
        await client.list(SECRET)
    assert fake_api.authorizations == {"Bearer s3cr3t"}


async def test_cluster_scoped_namespace_deletion_takes_contents(api: KubeClient, fake_api: FakeKubeApi) -> None:
    from controller.kubernetes.resources import NAMESPACE

    await api.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    await api.create(MODEL_ROUTE, route("r1", namespace="team-a"))
    await api.create(MODEL_ROUTE, route("r2"))
    assert (await api.get(NAMESPACE, "", "team-a"))["metadata"]["name"] == "team-a"
    await api.delete(NAMESPACE, "", "team-a")
    assert [o["metadata"]["name"] for o in (await api.list(MODEL_ROUTE)).items] == ["r2"]


async def test_rotating_token_is_read_for_every_request(fake_api: FakeKubeApi) -> None:
    tokens = iter(["first", "second"])
    async with KubeClient(fake_api.url, token_source=lambda: next(tokens)) as client:
        await client.list(SECRET)
        async for _ in client.watch(SECRET, resource_version="0", timeout_seconds=0):
            pass
    assert fake_api.authorizations == {"Bearer first", "Bearer second"}
