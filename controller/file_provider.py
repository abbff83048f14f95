"""File provider: a directory of manifests (what `kubectl apply -f DIR` would read) → the
list of objects the engine compiles, republished on every edit.

Before it: the user's editor. After it: an async `publish(objects)` callback (the wiring
puts them into the `World` and notifies the debouncer). Parsing and validation are the
loader's (`routing_engine.api.loader`); this module adds the watching and the rule that
keeps traffic up while someone edits:

- **last good version keeps serving.** An object whose document has errors keeps its last
  good definition; a file that cannot be read as a whole (YAML syntax error, half-saved
  file, a document without kind/name) keeps its whole last good version. A file that was
  never good contributes nothing. Errors are logged naming file and rule, and kept in
  `errors` for the status view until the file is fixed or deleted.
- **objects are tracked per file:** deleting a file removes exactly its objects; an
  object defined in two files is served from the first (sorted path) and the later
  definition is reported.
- **latency (SPEC 5):** watchfiles' default 1.6 s debounce is replaced by `step_ms`
  (yield once the directory is quiet that long) and `debounce_ms` (the cap).

Files are those the loader reads: `*.yaml|*.yml|*.json`, recursively, hidden files and
directories (editor swap files, `.modelroute/` status output) skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import watchfiles

from controller.background import spawn
from routing_engine.api.resources import ObjectKey, Resource

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class LoadError(Protocol):
    """What the loader reports (routing_engine.api.errors.ManifestError)."""

    @property
    def file(self) -> str: ...

    @property
    def object_key(self) -> ObjectKey | None: ...


Loader = Callable[[Sequence[Path]], tuple[Sequence[Resource], Sequence[LoadError]]]
Publish = Callable[[tuple[Resource, ...]], Awaitable[None]]


def _default_loader(paths: Sequence[Path]) -> tuple[Sequence[Resource], Sequence[LoadError]]:
    # Imported at call time: the loader is another layer's module and may change freely.
    from routing_engine.api.loader import load_manifests

    return load_manifests(paths)


def _visible(root: Path, path: Path) -> bool:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    return not any(p.startswith(".") for p in rel.parts)


def is_manifest(root: Path, path: Path) -> bool:
    return path.name.endswith(MANIFEST_SUFFIXES) and _visible(root, path)


class FileProvider:
    """`await start()` loads and publishes once, then watches; `await close()` stops."""

    def __init__(self, directory: Path, publish: Publish, *, loader: Loader = _default_loader,
                 debounce_ms: int = 50, step_ms: int = 10) -> None:
        self.directory = Path(directory).resolve()
        self._publish = publish
        self._load = loader
        self._debounce_ms, self._step_ms = debounce_ms, step_ms
        self._serving: dict[Path, tuple[Resource, ...]] = {}  # file → its last good objects
        self._errors: dict[Path, tuple[LoadError, ...]] = {}
        self._duplicates: dict[Path, tuple[str, ...]] = {}
        self._published: tuple[Resource, ...] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.publishes = 0

    @property
    def objects(self) -> tuple[Resource, ...]:
        return self._published or ()

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        """File → its current error messages (loader errors and cross-file duplicates)."""
        files = sorted(set(self._errors) | set(self._duplicates))
        return MappingProxyType({str(f): tuple(map(str, self._errors.get(f, ()))) + self._duplicates.get(f, ())
                                 for f in files})

    def load_errors(self) -> tuple[LoadError, ...]:
        """The loader's error objects (with `object_key`), for ValidationFailed conditions."""
        return tuple(e for f in sorted(self._errors) for e in self._errors[f])

    async def start(self) -> None:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"manifest directory {self.directory} does not exist")
        changes = watchfiles.awatch(self.directory, debounce=self._debounce_ms, step=self._step_ms,
                                    stop_event=self._stop,
                                    # Directories too: a directory moved in or removed may be the only event.
                                    watch_filter=lambda _c, p: _visible(self.directory, Path(p)))
        # The watcher exists once the generator has run to its first await; starting it
        # before the initial scan means an edit made during the scan is never missed.
        first = asyncio.ensure_future(changes.__anext__())
        await asyncio.sleep(0)
        try:
            await self._refresh(None)
        except BaseException:
            self._stop.set()
            await asyncio.gather(first, return_exceptions=True)
            raise
        self._task = spawn(self._watch(changes, first), name=f"file-provider {self.directory}", endless=False)

    async def _watch(self, changes: Any, first: "asyncio.Future[set[tuple[watchfiles.Change, str]]]") -> None:
        next_batch: Any = first
        while True:
            try:
                batch = await next_batch
            except StopAsyncIteration:
                if self._stop.is_set():
                    return
                raise RuntimeError(f"watching {self.directory} stopped unexpectedly") from None
            await self._refresh({Path(p) for _, p in batch})
            next_batch = changes.__anext__()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except asyncio.TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    def _files(self) -> list[Path]:
        found: list[Path] = []
        for root, dirs, files in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(Path(root, f) for f in files if is_manifest(self.directory, Path(root, f)))
        return sorted(found)

    async def _refresh(self, changed: set[Path] | None) -> None:
        """Reload `changed` files (None: all) and files that appeared or vanished."""
        present = self._files()
        gone = [f for f in list(self._serving) + list(self._errors) if f not in present]
        for f in gone:
            self._serving.pop(f, None)
            if self._errors.pop(f, None) is not None:
                log.info("broken manifest deleted: file=%s", f, extra={"file": str(f)})
        todo = [f for f in present if changed is None or f in changed or f not in self._serving and f not in self._errors]
        for f in todo:
            objects, errors = await asyncio.to_thread(self._load, [f])
            self._apply(f, tuple(objects), tuple(errors))
        await self._republish(present)

    def _apply(self, file: Path, objects: tuple[Resource, ...], errors: tuple[LoadError, ...]) -> None:
        previous = self._serving.get(file, ())
        if not errors:
            self._serving[file] = objects
            if self._errors.pop(file, None) is not None:
                log.info("manifest fixed: file=%s objects=%d", file, len(objects), extra={"file": str(file)})
            return
        self._errors[file] = errors
        for e in errors:
            log.warning("manifest rejected, last good version keeps serving: file=%s error=%s", file, e,
                        extra={"file": str(file), "error": str(e)})
        broken = {e.object_key for e in errors}
        if None in broken:
            return  # the file as a whole is unusable: keep all of its last good version
        kept = tuple(o for o in previous if o.key in broken)
        self._serving[file] = objects + kept

    async def _republish(self, files: list[Path]) -> None:
        merged: list[Resource] = []
        owner: dict[ObjectKey, Path] = {}
        self._duplicates.clear()
        for f in files:
            for obj in self._serving.get(f, ()):
                if obj.key in owner:
                    msg = f"{f}: {obj.key}: duplicate: already defined in {owner[obj.key]}; ignored"
                    self._duplicates[f] = self._duplicates.get(f, ()) + (msg,)
                    log.warning("duplicate object ignored: file=%s object=%s first=%s", f, obj.key, owner[obj.key],
                                extra={"file": str(f), "object": str(obj.key)})
                    continue
                owner[obj.key] = f
                merged.append(obj)
        result = tuple(merged)
        if result == self._published:
            return
        self._published = result
        self.publishes += 1
        try:
            await self._publish(result)
        except Exception:
            log.exception("publish failed: directory=%s", self.directory, extra={"directory": str(self.directory)})
