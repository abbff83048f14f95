"""The file provider on a real directory: write, edit, break, fix, delete; what is published;
saves in place held until quiet, files replaced whole applied at once, FIFOs ignored."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from controller.local.file_provider import FileProvider
from controller.provider import ProviderState
from routing_engine.api.resources import ModelInfer, ObjectKey, Resource
from tests.support import record_freezes


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
    """Every state published; `history`: the objects, each time they changed (a state whose
    only change is its errors adds none)."""

    def __init__(self) -> None:
        self.states: list[ProviderState] = []
        self.history: list[tuple[Resource, ...]] = []

    async def __call__(self, state: ProviderState) -> None:
        if not self.states or state.objects != self.states[-1].objects:
            self.history.append(state.objects)
        self.states.append(state)

    @property
    def error_changes(self) -> int:
        """States published whose errors differ from the state before."""
        return sum(1 for before, after in zip([ProviderState(), *self.states], self.states)
                   if after.errors != before.errors)

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
    provider = FileProvider(tmp_path, debounce_ms=50, step_ms=10)
    await provider.start(published)
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
    assert [e.object_key for e in published.states[-1].errors] == [mi("beta")]
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
    async def publish(state: ProviderState) -> None:
        raise AssertionError("must not publish")

    with pytest.raises(FileNotFoundError, match="does not exist"):
        await FileProvider(tmp_path / "nope").start(publish)


async def test_failing_publish_is_logged_and_watching_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def publish(state: ProviderState) -> None:
        calls.append(len(state.objects))
        if len(calls) == 1:
            raise RuntimeError("engine down")

    provider = FileProvider(tmp_path)
    await provider.start(publish)
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


@pytest.fixture
async def quiet(tmp_path: Path) -> AsyncIterator[tuple[Path, Published, FileProvider]]:
    """One file, a long quiet period (1 s: what is held is visibly held), and a cap no
    test here reaches."""
    (tmp_path / "a.yaml").write_text(infer_yaml("alpha") + "---\n" + infer_yaml("beta"))
    published = Published()
    provider = FileProvider(tmp_path, quiet_s=1.0, cap_s=30.0)
    await provider.start(published)
    try:
        yield tmp_path, published, provider
    finally:
        await provider.close()


def replace_file(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    tmp.rename(path)


async def test_a_slow_save_in_place_is_applied_only_once_quiet(quiet) -> None:
    d, published, _ = quiet
    with open(d / "a.yaml", "w") as out:  # truncated: empty for a while, then half written
        out.flush()
        await asyncio.sleep(0.3)
        text = infer_yaml("alpha", replicas=5) + "---\n" + infer_yaml("beta")
        out.write(text[:len(text) // 2])
        out.flush()
        await asyncio.sleep(0.3)
        out.write(text[len(text) // 2:])
    written = time.monotonic()
    await asyncio.sleep(0.5)
    assert published.get(mi("alpha")).spec.replicas == 1  # not quiet for 1 s yet: the last good version
    await published.until(lambda: published.get(mi("alpha")).spec.replicas == 5, "the complete save")
    assert time.monotonic() - written >= 1.0
    assert all({mi("alpha"), mi("beta")} <= {o.key for o in h} for h in published.history)  # never lost


async def test_a_file_replaced_whole_is_applied_at_once(quiet) -> None:
    d, published, _ = quiet
    replace_file(d / "a.yaml", infer_yaml("alpha", replicas=3) + "---\n" + infer_yaml("beta"))
    written = time.monotonic()
    await published.until(lambda: published.get(mi("alpha")).spec.replicas == 3, "the replaced file")
    assert time.monotonic() - written < 1.0  # not held for the quiet period


async def test_emptied_and_deleted_files_lose_their_objects_once_quiet(quiet) -> None:
    d, published, _ = quiet
    (d / "b.yaml").write_text(infer_yaml("gamma"))
    await published.until(lambda: mi("gamma") in published.keys, "new file")
    (d / "a.yaml").write_text("")
    await asyncio.sleep(0.5)
    assert mi("alpha") in published.keys  # an empty file may be a save in progress
    await published.until(lambda: published.keys == {mi("gamma")}, "emptied file's objects gone")
    (d / "b.yaml").unlink()
    await asyncio.sleep(0.5)
    assert mi("gamma") in published.keys  # a deletion may be an editor's rename dance
    await published.until(lambda: published.keys == set(), "deleted file's objects gone")


async def test_a_file_deleted_and_written_again_never_loses_its_objects(quiet) -> None:
    d, published, _ = quiet
    text = (d / "a.yaml").read_text()
    (d / "a.yaml").rename(d / "a.yaml~")  # an editor: keep a backup, write the new file
    await asyncio.sleep(0.2)
    (d / "a.yaml").write_text(text.replace("replicas: 1", "replicas: 2", 1))
    await published.until(lambda: published.get(mi("alpha")).spec.replicas == 2, "the new version")
    assert all({mi("alpha"), mi("beta")} <= {o.key for o in h} for h in published.history)


async def test_a_broken_save_reports_its_error_though_no_object_changes(quiet) -> None:
    d, published, provider = quiet
    count = len(published.history)
    replace_file(d / "a.yaml", "kind: [unclosed\n")
    await published.until(lambda: str(d / "a.yaml") in provider.errors, "the error")
    # told (a state with the error), though no object changed
    assert published.error_changes == 1 and len(published.history) == count
    assert [str(e) for e in published.states[-1].errors] == list(provider.errors[str(d / "a.yaml")])
    replace_file(d / "a.yaml", infer_yaml("alpha"))
    await published.until(lambda: provider.errors == {}, "the fix")
    assert published.error_changes == 2 and published.states[-1].errors == ()


async def test_a_fifo_is_ignored_and_reported_and_edits_still_apply(quiet) -> None:
    d, published, provider = quiet
    os.mkfifo(d / "pipe.yaml")
    await published.until(lambda: str(d / "pipe.yaml") in provider.errors, "the FIFO reported")
    assert provider.errors[str(d / "pipe.yaml")] == (f"{d / 'pipe.yaml'}: is a FIFO, not a regular file; ignored",)
    replace_file(d / "a.yaml", infer_yaml("alpha", replicas=4))
    await published.until(lambda: published.get(mi("alpha")).spec.replicas == 4, "an edit next to the FIFO")
    (d / "pipe.yaml").unlink()
    await published.until(lambda: str(d / "pipe.yaml") not in provider.errors, "the FIFO gone")


async def test_load_reads_once_and_start_serves_it_without_reading_again(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(infer_yaml("alpha"))
    reads: list[Path] = []
    published = Published()

    def loader(paths):
        from routing_engine.api.loader import load_manifests
        reads.extend(paths)
        return load_manifests(paths)

    provider = FileProvider(tmp_path, loader=loader)
    assert [o.key for o in (await provider.load()).objects] == [mi("alpha")] and published.history == []
    await provider.start(published)
    try:
        assert published.keys == {mi("alpha")} and reads == [tmp_path / "a.yaml"]
    finally:
        await provider.close()


async def test_the_first_read_runs_with_the_collector_paused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first read parses every manifest of the directory (30,000 objects at 10,000
    routes), which all live on: the collector is paused and what it made is frozen;
    later reads, one file each, run as usual."""
    import gc

    from routing_engine.api.loader import load_manifests

    (tmp_path / "a.yaml").write_text(infer_yaml("alpha"))
    collector_on: list[bool] = []

    def loader(paths):  # type: ignore[no-untyped-def]
        collector_on.append(gc.isenabled())
        return load_manifests(paths)

    freezes = record_freezes(monkeypatch)
    published = Published()
    provider = FileProvider(tmp_path, loader=loader)
    assert gc.isenabled()
    try:
        await provider.start(published)
        assert collector_on == [False] and freezes == [False] and gc.isenabled()
        (tmp_path / "b.yaml").write_text(infer_yaml("beta"))
        await published.until(lambda: mi("beta") in published.keys, "the new file")
        assert collector_on[1:] and all(collector_on[1:]) and len(freezes) == 1
    finally:
        await provider.close()
        gc.unfreeze()
    assert gc.isenabled()


def test_the_provider_never_opens_a_fifo_for_a_blocking_read(tmp_path: Path) -> None:
    # A regular file turned into a FIFO between the scan and the read must not hang the reader.
    from controller.local.file_provider import _default_loader

    os.mkfifo(tmp_path / "x.yaml")
    objects, errors = _default_loader([tmp_path / "x.yaml"])
    assert list(objects) == [] and [e.rule for e in errors] == ["is not a regular file"]


async def test_other_files_read_and_log_nothing_and_a_duplicate_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An acceptance probe: with an object in two files, every event in the directory (a
    log written there: `up > DIR/up.log`) read the files again and logged the duplicate
    again, which made another event: a busy loop writing the log for good."""
    from routing_engine.api.loader import load_manifests

    (tmp_path / "a.yaml").write_text(infer_yaml("alpha"))
    (tmp_path / "b.yaml").write_text(infer_yaml("beta"))
    reads: list[Path] = []

    def loader(paths):  # type: ignore[no-untyped-def]
        reads.extend(paths)
        return load_manifests(paths, regular_files_only=True)

    published = Published()
    provider = FileProvider(tmp_path, loader=loader)
    caplog.set_level("WARNING", logger="controller.local.file_provider")
    await provider.start(published)
    try:
        replace_file(tmp_path / "z.yaml", infer_yaml("alpha", replicas=3))
        await published.until(lambda: str(tmp_path / "z.yaml") in provider.errors, "the duplicate reported")
        reads.clear()
        for i in range(5):
            (tmp_path / "notes.txt").write_text(f"note {i}")
            (tmp_path / "up.log").write_text(f"line {i}\n")
            await asyncio.sleep(0.02)
        replace_file(tmp_path / "b.yaml", infer_yaml("beta", replicas=2))  # events come in order: after the notes
        await published.until(lambda: published.get(mi("beta")).spec.replicas == 2, "the edit after the notes")
        assert reads == [tmp_path / "b.yaml"]  # the notes and the log were never a reason to read
        assert published.get(mi("alpha")).spec.replicas == 1  # a.yaml sorts first and keeps serving it
        assert sum("duplicate object ignored" in r.getMessage() for r in caplog.records) == 1
        replace_file(tmp_path / "z.yaml", infer_yaml("alpha", replicas=4) + "---\n" + infer_yaml("beta"))
        await published.until(lambda: len(provider.errors[str(tmp_path / "z.yaml")]) == 2, "a second duplicate")
        assert sum("duplicate object ignored" in r.getMessage() for r in caplog.records) == 2  # only the new one
    finally:
        await provider.close()


async def test_saves_in_place_without_a_pause_cannot_postpone_a_change_for_good(tmp_path: Path) -> None:
    """SPEC 5's cap: saves in place closer together than the quiet period held every one
    of them for as long as they went on. Once held for `cap_s`, a complete version (valid,
    no object gone) is applied; a version cut short still waits for the quiet period."""
    whole = lambda n: infer_yaml("alpha", replicas=n) + "---\n" + infer_yaml("beta")  # noqa: E731
    (tmp_path / "a.yaml").write_text(whole(1))
    published = Published()
    provider = FileProvider(tmp_path, quiet_s=1.0, cap_s=0.3)
    await provider.start(published)
    try:
        applied_during_burst = False
        for n in range(2, 22):  # 20 saves, 0.1 s apart: never quiet for 1 s
            text = whole(n) if n % 2 == 0 else infer_yaml("alpha", replicas=n)  # odd: cut short, beta gone
            with open(tmp_path / "a.yaml", "w") as out:
                out.write(text)
            await asyncio.sleep(0.1)
            applied_during_burst |= published.get(mi("alpha")).spec.replicas > 1
        assert applied_during_burst  # not postponed until the writes stopped
        assert all(mi("beta") in {o.key for o in h} for h in published.history)  # a cut-short save never applied
        assert all(o.spec.replicas in (1, *range(2, 22, 2)) for h in published.history for o in h if o.key == mi("alpha"))
        await published.until(lambda: published.keys == {mi("alpha")}, "the last save, once quiet")
    finally:
        await provider.close()
