"""The inotify tree watch: the paths a save, a rename, a new directory and a deletion
touch, hidden paths left out; and the file provider still serves edits through
watchfiles where inotify is missing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from controller.local import file_provider
from controller.local.file_provider import FileProvider
from controller.local.inotify import TreeWatch
from controller.provider import ProviderState
from tests.controller.test_file_provider import infer_yaml, mi


async def until(tree: TreeWatch, wanted: set[Path]) -> set[Path]:
    """Batches until every wanted path was reported (bounded); everything reported."""
    seen: set[Path] = set()
    async with asyncio.timeout(5):
        while not wanted <= seen:
            batch = await tree.batch()
            assert batch is not None
            seen |= batch
    return seen


async def test_saves_renames_new_directories_and_deletions_are_reported(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    tree = TreeWatch(tmp_path, lambda p: not any(part.startswith(".") for part in p.relative_to(tmp_path).parts))
    tree.start()
    try:
        (tmp_path / "a.yaml").write_text("x")
        assert tmp_path / "a.yaml" in await until(tree, {tmp_path / "a.yaml"})
        (tmp_path / ".b.yaml.tmp").write_text("y")
        os.replace(tmp_path / ".b.yaml.tmp", tmp_path / "b.yaml")
        seen = await until(tree, {tmp_path / "b.yaml"})
        assert not any(p.name.startswith(".") for p in seen)
        (tmp_path / "new").mkdir()
        await until(tree, {tmp_path / "new"})
        (tmp_path / "new" / "c.yaml").write_text("z")  # in a directory watched since it appeared
        (tmp_path / "old" / "d.yaml").write_text("w")
        await until(tree, {tmp_path / "new" / "c.yaml", tmp_path / "old" / "d.yaml"})
        (tmp_path / "a.yaml").unlink()
        await until(tree, {tmp_path / "a.yaml"})
    finally:
        tree.close()


async def test_the_provider_falls_back_to_watchfiles_without_inotify(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_provider.TreeWatch, "available", staticmethod(lambda: False))
    (tmp_path / "a.yaml").write_text(infer_yaml("alpha"))
    states: list[ProviderState] = []

    async def publish(state: ProviderState) -> None:
        states.append(state)

    provider = FileProvider(tmp_path, debounce_ms=50, step_ms=10)
    await provider.start(publish)
    try:
        (tmp_path / ".b.tmp").write_text(infer_yaml("beta"))
        os.replace(tmp_path / ".b.tmp", tmp_path / "b.yaml")
        async with asyncio.timeout(5):
            while not states or mi("beta") not in {o.key for o in states[-1].objects}:
                await asyncio.sleep(0.02)
        assert provider._tree is None  # it was watchfiles that saw it
    finally:
        await provider.close()


async def test_after_an_overflow_directories_made_meanwhile_are_watched(tmp_path: Path) -> None:
    """The kernel drops events when its queue overflows: a directory created then would
    never get a watch, and saves inside it would go unseen; the whole tree is walked again."""
    from inotify_simple import Event, flags

    tree = TreeWatch(tmp_path, lambda p: True)
    tree.start()
    try:
        assert tree._inotify is not None
        (tmp_path / "sub").mkdir()
        real = tree._inotify.read
        real(timeout=0)  # its CREATE is lost: the queue overflowed instead
        tree._inotify.read = lambda timeout=0: [Event(-1, flags.Q_OVERFLOW, 0, "")]  # type: ignore[method-assign]
        tree._read()
        tree._inotify.read = real  # type: ignore[method-assign]
        assert await tree.batch() is None  # everything may have changed: re-read all
        (tmp_path / "sub" / "a.yaml").write_text("x")
        assert tmp_path / "sub" / "a.yaml" in await until(tree, {tmp_path / "sub" / "a.yaml"})
    finally:
        tree.close()


async def test_a_directory_moved_out_of_the_tree_is_no_longer_watched(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    tree = TreeWatch(root, lambda p: True)
    tree.start()
    try:
        os.rename(root / "sub", outside / "sub")
        await until(tree, {root / "sub"})
        assert root / "sub" not in set(tree._dirs.values())
    finally:
        tree.close()
