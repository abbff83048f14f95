"""The file provider on a real directory: write, edit, break, fix, delete; what is published."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from controller.file_provider import FileProvider
from routing_engine.api.resources import ModelInfer, ObjectKey, Resource


def infer_yaml(name: str, replicas: int = 1, namespace: str = "default") -> str:
    return f"""apiVersion: workload.matrixinfer.ai/v1alpha1
kind: ModelInfer
metadata:
  name: {name}
  namespace: {namespace}
spec:
  modelRef: {{name: llama}}
  replicas: {replicas}
"""


def server_yaml(name: str, path: str, port: int = 8080) -> str:
    return f"""apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelServer
metadata: {{name: {name}}}
spec:
  modelInferRef: {{name: {name}-infer}}
  service: {{port: {port}}}
  routing: {{path: "{path}"}}
"""


def mi(name: str, namespace: str = "default") -> ObjectKey:
    return ObjectKey("ModelInfer", namespace, name)


class Published:
    def __init__(self) -> None:
        self.history: list[tuple[Resource, ...]] = []

    async def __call__(self, objects: tuple[Resource, ...]) -> None:
        self.history.append(objects)

    @property
    def keys(self) -> set[ObjectKey]:
        return {o.key for o in self.history[-1]} if self.history else set()

    def get(self, key: ObjectKey) -> Resource:
        return next(o for o in self.history[-1] if o.key == key)

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; published keys: {self.keys}")


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Path, Published, FileProvider]]:
    (tmp_path / "a.yaml").write_text(infer_yaml("alpha"))
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "b.yml").write_text(infer_yaml("beta", 2) + "---\n" + server_yaml("beta", "/v1/models/beta"))
    (tmp_path / ".a.yaml.swp").write_text("garbage: [")
    (tmp_path / ".modelroute").mkdir()
    (tmp_path / ".modelroute" / "status.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a manifest")
    published = Published()
    provider = FileProvider(tmp_path, published, debounce_ms=50, step_ms=10)
    await provider.start()
    try:
        yield tmp_path, published, provider
    finally:
        await provider.close()


async def test_initial_load_reads_nested_files_and_skips_hidden(watched) -> None:
    _, published, provider = watched
    assert len(published.history) == 1
    assert published.keys == {mi("alpha"), mi("beta"), ObjectKey("ModelServer", "default", "beta")}
    assert provider.errors == {}


async def test_edit_add_and_delete_files(watched) -> None:
    d, published, _ = watched
    (d / "a.yaml").write_text(infer_yaml("alpha", replicas=4))
    await published.until(lambda: isinstance(o := published.get(mi("alpha")), ModelInfer) and o.spec.replicas == 4,
                          "edited replicas")
    (d / "nested" / "c.json").write_text(
        '{"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",'
        ' "metadata": {"name": "gamma"}, "spec": {"modelRef": {"name": "g"}}}')
    await published.until(lambda: mi("gamma") in published.keys, "new json file")
    (d / "nested" / "b.yml").unlink()
    await published.until(lambda: published.keys == {mi("alpha"), mi("gamma")}, "deleted file's objects gone")


async def test_broken_file_keeps_last_good_version_until_fixed(watched) -> None:
    d, published, provider = watched
    count = len(published.history)
    (d / "a.yaml").write_text("apiVersion: workload.matrixinfer.ai/v1alpha1\nkind: [unclosed\n")
    await published.until(lambda: str(d / "a.yaml") in provider.errors, "syntax error reported")
    assert "not valid YAML" in provider.errors[str(d / "a.yaml")][0]
    assert mi("alpha") in published.keys and len(published.history) == count  # nothing changed, nothing pushed
    (d / "a.yaml").write_text(infer_yaml("alpha", replicas=7))
    await published.until(lambda: provider.errors == {} and published.get(mi("alpha")).spec.replicas == 7,
                          "fixed file served")


async def test_invalid_object_keeps_its_last_good_definition_while_neighbours_update(watched) -> None:
    d, published, provider = watched
    bad_infer = infer_yaml("beta", 2).replace("replicas: 2", "replicas: -3")
    (d / "nested" / "b.yml").write_text(bad_infer + "---\n" + server_yaml("beta", "/v1/models/beta2"))
    server = ObjectKey("ModelServer", "default", "beta")
    await published.until(lambda: published.get(server).spec.routing.path == "/v1/models/beta2", "neighbour updated")
    assert published.get(mi("beta")).spec.replicas == 2  # last good definition
    [message] = provider.errors[str(d / "nested" / "b.yml")]
    assert "ModelInfer default/beta" in message and "spec.replicas" in message
    assert [e.object_key for e in provider.load_errors()] == [mi("beta")]
    (d / "nested" / "b.yml").unlink()
    await published.until(lambda: published.keys == {mi("alpha")}, "deleted broken file")
    assert provider.errors == {}


async def test_never_good_file_contributes_nothing_and_duplicates_are_reported(watched) -> None:
    d, published, provider = watched
    (d / "zz-bad.yaml").write_text(infer_yaml("delta").replace("modelRef", "modelRefs"))
    (d / "zz-dup.yaml").write_text(infer_yaml("alpha", replicas=9) + "---\n" + infer_yaml("epsilon"))
    await published.until(lambda: mi("epsilon") in published.keys and str(d / "zz-bad.yaml") in provider.errors,
                          "duplicate and bad files seen")
    assert mi("delta") not in published.keys
    assert published.get(mi("alpha")).spec.replicas == 1  # a.yaml sorts first and wins
    [dup] = provider.errors[str(d / "zz-dup.yaml")]
    assert "duplicate" in dup and "a.yaml" in dup


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    async def publish(objects: tuple[Resource, ...]) -> None:
        raise AssertionError("must not publish")

    with pytest.raises(FileNotFoundError, match="does not exist"):
        await FileProvider(tmp_path / "nope", publish).start()


async def test_failing_publish_is_logged_and_watching_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def publish(objects: tuple[Resource, ...]) -> None:
        calls.append(len(objects))
        if len(calls) == 1:
            raise RuntimeError("engine down")

    provider = FileProvider(tmp_path, publish)
    await provider.start()
    try:
        (tmp_path / "x.yaml").write_text(infer_yaml("x"))
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert calls == [0, 1]
        assert "publish failed" in caplog.text
    finally:
        await provider.close()


async def test_removing_and_moving_in_whole_directories(watched, tmp_path_factory: pytest.TempPathFactory) -> None:
    import shutil

    d, published, _ = watched
    shutil.rmtree(d / "nested")
    await published.until(lambda: published.keys == {mi("alpha")}, "objects of a removed directory gone")
    outside = tmp_path_factory.mktemp("staging")
    (outside / "more").mkdir()
    (outside / "more" / "m.yaml").write_text(infer_yaml("moved"))
    (outside / "more").rename(d / "more")
    await published.until(lambda: mi("moved") in published.keys, "directory moved in")
