"""Issue #17: `modelroute.client`, the typed Python client, against the fake API server —
CRUD of the five kinds as pydantic models, what a user writes stored unchanged (no
injected defaults), metadata the server added kept across a replace, optimistic
concurrency, typed errors, and a watch that lists, streams and survives 410 Gone."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.kubernetes.resources import MODEL_ROUTE, MODEL_SERVER
from modelroute.client import Client, Conflict, Event, InvalidObject, NotFound
from routing_engine.api.resources import KIND_BY_NAME, ModelRoute, ModelServer, Resource
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.support import REPO

SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation")


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((REPO / "examples" / "seeds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] != "Secret":
                doc.pop("status", None)
                doc["metadata"].setdefault("namespace", "default")
                docs.append(doc)
    return docs


def _as_written(stored: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(stored)
    for field in SERVER_FIELDS:
        out["metadata"].pop(field, None)
    return out


@pytest.fixture
async def client(fake_api: FakeKubeApi) -> Any:
    from controller.kubernetes.client import KubeClient

    async with Client(KubeClient(fake_api.url, request_timeout=5.0)) as c:
        yield c


async def test_every_kind_round_trips_as_written(client: Client, fake_api: FakeKubeApi) -> None:
    docs = _docs()
    assert {d["kind"] for d in docs} == {"ModelServer", "ModelRoute", "ModelInfer", "Model", "AutoscalingPolicy"}
    for doc in docs:
        obj = KIND_BY_NAME[doc["kind"]].model_validate(doc)
        created = await client.create(obj)
        assert created.metadata.uid and created.metadata.resource_version
        stored = fake_api.read(fake_api.type_of(doc), doc["metadata"]["namespace"], doc["metadata"]["name"])
        assert stored is not None
        assert _as_written(stored) == doc  # no `type: ClusterIP`, `enabled: false`, ... the user never wrote
        got = await client.get(type(obj), doc["metadata"]["name"], doc["metadata"]["namespace"])
        assert type(got) is type(obj)
        assert _as_written(got.manifest()) == doc


async def test_replace_keeps_what_the_server_added_and_is_conditional(client: Client, fake_api: FakeKubeApi) -> None:
    doc = next(d for d in _docs() if d["kind"] == "ModelRoute")
    fake_api.seed({**doc, "metadata": {**doc["metadata"], "finalizers": ["example.com/keep"],
                                       "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o",
                                                            "uid": "u-1"}]}})
    route = await client.get(ModelRoute, "llama-route")
    edited = route.manifest()
    edited["spec"]["routes"][3]["weight"], edited["spec"]["routes"][4]["weight"] = 50, 50
    replaced = await client.replace(ModelRoute.model_validate(edited))
    assert [r.weight for r in replaced.spec.routes[3:]] == [50, 50]
    stored = fake_api.read(MODEL_ROUTE, "default", "llama-route")
    assert stored is not None
    assert stored["metadata"]["finalizers"] == ["example.com/keep"]
    assert stored["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert stored["spec"]["routes"][0]["match"]["headers"]["x-user-tier"] == "premium"  # still a bare string
    with pytest.raises(Conflict):  # `route` carries the resourceVersion from before the replace
        await client.replace(route)


async def test_patch_delete_list_and_typed_errors(client: Client, fake_api: FakeKubeApi) -> None:
    for doc in _docs():
        if doc["kind"] == "ModelServer":
            fake_api.seed(doc)
    other = next(d for d in _docs() if d["metadata"]["name"] == "llama-server")
    fake_api.seed({**other, "metadata": {"name": "llama-server", "namespace": "team-b"}})
    in_default = await client.list(ModelServer)
    everywhere = await client.list(ModelServer, all_namespaces=True)
    assert {s.metadata.namespace for s in in_default} == {"default"}
    assert {s.metadata.namespace for s in everywhere} >= {"default", "team-b", "production"}
    assert len(everywhere) == len(in_default) + 1 + sum(1 for s in everywhere if s.metadata.namespace not in
                                                         ("default", "team-b"))
    patched = await client.patch(ModelServer, "llama-server", {"spec": {"routing": {"timeout": "45s"}}})
    assert patched.spec.routing.timeout == "45s"
    await client.delete(ModelServer, "llama-server", "team-b")
    with pytest.raises(NotFound):
        await client.get(ModelServer, "llama-server", "team-b")


async def test_an_invalid_object_in_the_cluster_names_field_and_rule(client: Client, fake_api: FakeKubeApi) -> None:
    doc = next(d for d in _docs() if d["kind"] == "ModelRoute")
    doc["spec"]["routes"][3]["weight"] = doc["spec"]["routes"][4]["weight"] = 0
    fake_api.seed(doc)
    with pytest.raises(InvalidObject, match=r"ModelRoute default/llama-route: spec.routes\[3\].weight: the weights"):
        await client.get(ModelRoute, "llama-route")


async def test_watch_lists_streams_and_recovers_from_gone(client: Client, fake_api: FakeKubeApi) -> None:
    servers = [d for d in _docs() if d["kind"] == "ModelServer" and d["metadata"]["namespace"] == "default"]
    fake_api.seed(servers[0])
    seen: asyncio.Queue[Event[ModelServer]] = asyncio.Queue()

    async def follow() -> None:
        async for event in client.watch(ModelServer):
            await seen.put(event)

    async def next_event() -> tuple[str, str, str | None]:
        event = await asyncio.wait_for(seen.get(), 5)
        return event.type, event.object.metadata.name, event.object.spec.routing.timeout

    task = asyncio.create_task(follow())
    try:
        assert await next_event() == ("ADDED", servers[0]["metadata"]["name"], servers[0]["spec"]["routing"].get("timeout"))
        fake_api.seed(servers[1])
        assert (await next_event())[:2] == ("ADDED", servers[1]["metadata"]["name"])
        fake_api.write(MODEL_SERVER, "default", servers[1]["metadata"]["name"],
                       lambda o: o["spec"]["routing"].update(timeout="9s"))
        assert await next_event() == ("MODIFIED", servers[1]["metadata"]["name"], "9s")
        # The stream ends; before the watch resumes, an object goes and history is
        # compacted: the resumed watch gets 410 Gone, lists again and reports exactly
        # what changed while it was away.
        gone = servers[0]["metadata"]["name"]
        fake_api.before("GET", MODEL_SERVER, lambda: (fake_api.remove(MODEL_SERVER, "default", gone), fake_api.compact()))
        requests_before = len(fake_api.requests)
        fake_api.close_watches()
        assert (await next_event())[:2] == ("DELETED", gone)
        assert len(fake_api.requests) - requests_before >= 2  # the refused watch, then the list
        assert seen.empty()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_client_dumps_only_what_was_written() -> None:
    doc = yaml.safe_load((REPO / "examples" / "quickstart" / "model-servers.yaml").read_text().split("---")[0])
    server: Resource = ModelServer.model_validate(doc)
    assert server.manifest() == doc
    assert "type" not in server.manifest()["spec"]["service"]  # the default (ClusterIP) stays implicit


def test_from_kubeconfig_takes_the_contexts_namespace(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: team-b}}, {name: d, context: {cluster: k, user: u}}]\n"
        "users: [{name: u, user: {}}]\n")
    assert Client.from_kubeconfig(str(kubeconfig)).namespace == "team-b"
    assert Client.from_kubeconfig(str(kubeconfig), context="d").namespace == "default"
    assert Client.from_kubeconfig(str(kubeconfig), namespace="x").namespace == "x"
