"""File provider: a directory of manifests (what `kubectl apply -f DIR` would read) → the
list of objects the engine compiles, republished on every edit.

Before it: the user's editor. After it: the `publish` callback of a `Provider`
(`controller.provider`), handed a `ProviderState` whenever the objects or the errors
changed (so a broken save reaches the status view even when no object changed). A
directory observes no endpoints: embedded mode's come from its replica runtime.
Parsing and validation are the loader's (`routing_engine.api.loader`); this module adds
the watching and the rules that keep traffic up while someone edits:

- **last good version keeps serving.** An object whose document has errors keeps its last
  good definition; a file that cannot be read as a whole (YAML syntax error, a document
  without kind/name) keeps its whole last good version. A file that was never good
  contributes nothing. Errors are logged naming file and rule, and kept in the state's
  errors (listed per file by `errors`) until the file is fixed or deleted.
- **a file being written is not read half-way.** Saving in place (`cmd > route.yaml`, an
  editor that truncates first) shows the watcher an empty, then a partial file. So a
  change is applied at once only when it cannot be half a save: a file replaced whole
  (rename, a new inode) or a new file, whose content is valid and keeps every object the
  file had. Any other change (written in place, now empty, with errors, with objects gone,
  the file deleted) is held, the last good version serving, until the file has been quiet
  (same inode, size and mtime) for `quiet_s` (0.4 s); then it is applied, errors and
  deletions included. Saves in place that go on without such a pause cannot postpone a
  change for good (SPEC 5's cap): once a file has been held for `cap_s` (1 s), a version
  read valid and keeping every object is applied (a file cut short, with errors or objects
  gone, still waits for the quiet period).
- **regular files only.** A FIFO, socket or device named `*.yaml` is never opened (a read
  would block for good); it is ignored and reported (log and `errors`).
- **objects are tracked per file:** deleting a file removes exactly its objects; an
  object defined in two files is served from the first (sorted path) and the later
  definition is reported (what `modelroute validate -f DIR` and a restart would say). The
  report is logged once, when it appears or changes.
- **only manifests count.** An event for another path (a log written into the directory,
  `notes.txt`) reads and logs nothing: with `up > DIR/up.log`, a log line per event fed
  itself for good. Directories count (one moved in or out is sometimes the only event).
- **latency (SPEC 5):** an isolated save is read as soon as the kernel reports it (Linux
  inotify, `controller.local.inotify`); changes made while a batch is read come in the
  next batch, so bursts coalesce with no fixed delay. Where inotify is missing,
  watchfiles, with its 1.6 s default debounce replaced by `step_ms` (yield once the
  directory is quiet that long) and `debounce_ms` (the cap).

Files are those the loader reads: `*.yaml|*.yml|*.json`, recursively, hidden files and
directories (editor swap files, `.modelroute/` status output) skipped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import stat
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import watchfiles

from controller.local.inotify import TreeWatch
from controller.provider import ProviderState, Publish, errors_by_file
from kit.collector import gc_paused
from kit.tasks import cancel_and_wait, spawn
from routing_engine.api.errors import ManifestError
from routing_engine.api.resources import ObjectKey, Resource

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


Loader = Callable[[Sequence[Path]], tuple[Sequence[Resource], Sequence[ManifestError]]]


def _default_loader(paths: Sequence[Path]) -> tuple[Sequence[Resource], Sequence[ManifestError]]:
    # Imported at call time: the loader is another layer's module and may change freely.
    from routing_engine.api.loader import load_manifests

    return load_manifests(paths, regular_files_only=True)


QUIET_S = 0.4  # a held change is applied once its file has not changed for this long
CAP_S = 1.0  # ... or, when complete (valid, no object gone), once it has been held this long


@dataclass(frozen=True, slots=True)
class _Stamp:
    """What tells two versions of a file apart without reading it."""

    inode: int
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class _Hold:
    """A held file: the version last seen, since when it is unchanged, and since when the
    file is held (its first unsettled version: what the cap counts from)."""

    version: _Stamp | None
    since: float
    first: float


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _Stamp(st.st_ino, st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def _not_regular(path: Path) -> str | None:
    """What a manifest-named path is when it is not a readable regular file, else None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if path.is_symlink() else None  # None: gone meanwhile
    except OSError as err:
        return f"unreadable: {err.strerror}"
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return what
    return "not a regular file"


def _visible(root: Path, path: Path) -> bool:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    return not any(p.startswith(".") for p in rel.parts)


def is_manifest(root: Path, path: Path) -> bool:
    return path.name.endswith(MANIFEST_SUFFIXES) and _visible(root, path)


class FileProvider:
    """A `Provider`: `await start(publish)` loads and publishes once, then watches;
    `await close()` stops."""

    def __init__(self, directory: Path, *, loader: Loader = _default_loader,
                 debounce_ms: int = 50, step_ms: int = 10, quiet_s: float = QUIET_S,
                 cap_s: float = CAP_S) -> None:
        self.directory = Path(directory).resolve()
        self._publish: Publish | None = None
        self._load = loader
        self._debounce_ms, self._step_ms = debounce_ms, step_ms
        self._quiet_s, self._cap_s = quiet_s, cap_s
        self._serving: dict[Path, tuple[Resource, ...]] = {}  # file → its last good objects
        # The files defining each key (a file once per definition), and the keys defined more
        # than once: kept up to date per file, so that a merge looks into a file only when
        # one of its objects has a duplicate (an edit costs that file, not 10,000s of objects).
        self._definitions: dict[ObjectKey, tuple[Path, ...]] = {}
        self._shared: set[ObjectKey] = set()
        self._kept: dict[Path, tuple[Resource, ...]] = {}  # a file with duplicates: what of it is merged
        self._errors: dict[Path, tuple[ManifestError, ...]] = {}
        self._duplicates: dict[Path, tuple[str, ...]] = {}
        self._irregular: dict[Path, str] = {}  # manifest-named paths that are no regular file
        self._applied: dict[Path, _Stamp] = {}  # the version of each file last applied
        self._unsettled: dict[Path, _Hold] = {}
        self._published: ProviderState | None = None
        self._lock = asyncio.Lock()
        self._held = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tree: TreeWatch | None = None
        self._settler: asyncio.Task[None] | None = None
        self._loaded = False
        self.publishes = 0  # how many times the published objects changed (an error alone changes none)

    @property
    def objects(self) -> tuple[Resource, ...]:
        return self._published.objects if self._published is not None else ()

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        """File → its current error messages (loader errors, cross-file duplicates, and
        paths that are not regular files)."""
        return errors_by_file(self._all_errors())

    def _all_errors(self) -> tuple[ManifestError, ...]:
        """Every file's errors, by file: the loader's (an object's carry its key: it is
        rejected), then notes that reject no object (a later duplicate definition, which
        is ignored while the first serves; a path that is no regular file)."""
        found: list[ManifestError] = []
        for f in sorted(set(self._errors) | set(self._duplicates) | set(self._irregular)):
            found += self._errors.get(f, ())
            found += (_note(f, text) for text in self._duplicates.get(f, ()))
            if f in self._irregular:
                found.append(_note(f, f"is {self._irregular[f]}, not a regular file; ignored"))
        return tuple(found)

    def _state(self) -> ProviderState:
        return ProviderState.of_parts(self._merged(), errors=self._all_errors())

    async def load(self) -> ProviderState:
        """Read the directory once, without publishing or watching: what `start()` will
        serve (it re-reads only what changed meanwhile). For checks before starting."""
        if not self.directory.is_dir():
            raise FileNotFoundError(f"manifest directory {self.directory} does not exist")
        await self._refresh(None, publish=False)
        self._loaded = True
        return self._state()

    async def start(self, publish: Publish) -> None:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"manifest directory {self.directory} does not exist")
        self._publish = publish
        if TreeWatch.available():
            await self._start_inotify()
            return
        changes = watchfiles.awatch(self.directory, debounce=self._debounce_ms, step=self._step_ms,
                                    stop_event=self._stop,
                                    # Directories too: a directory moved in or removed may be the only event.
                                    watch_filter=lambda _c, p: _visible(self.directory, Path(p)))
        # The watcher exists once the generator has run to its first await; starting it
        # before the initial scan means an edit made during the scan is never missed.
        first = asyncio.ensure_future(changes.__anext__())
        await asyncio.sleep(0)
        try:
            await self._refresh(set() if self._loaded else None)
        except BaseException:
            self._stop.set()
            await asyncio.gather(first, return_exceptions=True)
            raise
        self._task = spawn(self._watch(changes, first), name=f"file-provider {self.directory}", endless=False)
        self._settler = spawn(self._settle(), name=f"file-provider settle {self.directory}")

    async def _start_inotify(self) -> None:
        tree = self._tree = TreeWatch(self.directory, lambda p: _visible(self.directory, p))
        tree.start()  # before the initial scan: an edit made during the scan is never missed
        try:
            await self._refresh(set() if self._loaded else None)
        except BaseException:
            tree.close()
            raise
        self._task = spawn(self._watch_tree(tree), name=f"file-provider {self.directory}", endless=False)
        self._settler = spawn(self._settle(), name=f"file-provider settle {self.directory}")

    async def _watch_tree(self, tree: TreeWatch) -> None:
        while True:
            changed = await tree.batch()
            if self._stop.is_set():
                return
            # None: the kernel dropped events; every file may have changed (still held if
            # it may be half a save: not the initial read).
            if changed is None:
                await self._refresh(set(self._applied))
            elif relevant := {p for p in changed if self._matters(p)}:
                await self._refresh(relevant)

    async def _watch(self, changes: Any, first: "asyncio.Future[set[tuple[watchfiles.Change, str]]]") -> None:
        next_batch: Any = first
        while True:
            try:
                batch = await next_batch
            except StopAsyncIteration:
                if self._stop.is_set():
                    return
                raise RuntimeError(f"watching {self.directory} stopped unexpectedly") from None
            if relevant := {p for _, name in batch if self._matters(p := Path(name))}:
                await self._refresh(relevant)
            next_batch = changes.__anext__()

    async def _settle(self) -> None:
        """Re-read held files once they may have been quiet for `quiet_s`."""
        loop = asyncio.get_running_loop()
        while True:
            await self._held.wait()
            while self._unsettled:
                due = min(hold.since for hold in self._unsettled.values()) + self._quiet_s
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._refresh(set(self._unsettled))
            self._held.clear()

    def _matters(self, path: Path) -> bool:
        """Could a change of `path` change what is served? A manifest, a directory, or a
        path that held files known here (a directory moved away or removed)."""
        if is_manifest(self.directory, path):
            return True
        if not _visible(self.directory, path):
            return False
        if path.exists():  # a directory counts; any other path that is there is no manifest
            return path.is_dir()
        return any(path in f.parents for f in (*self._applied, *self._unsettled, *self._irregular))

    async def close(self) -> None:
        self._stop.set()
        if self._tree is not None:
            self._tree.close()
        await cancel_and_wait(self._settler)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except asyncio.TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    def _scan(self) -> dict[Path, _Stamp]:
        """The regular manifest files and their versions; the others go to `_irregular`."""
        found: dict[Path, _Stamp] = {}
        irregular: dict[Path, str] = {}
        for root, dirs, files in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                path = Path(root, name)
                if not is_manifest(self.directory, path):
                    continue
                stamp = _stamp(path)
                if stamp is not None:
                    found[path] = stamp
                elif (what := _not_regular(path)) is not None:
                    irregular[path] = what
        for path, what in sorted(irregular.items()):
            if self._irregular.get(path) != what:
                log.warning("manifest is %s, not a regular file; ignored: file=%s", what, path,
                            extra={"file": str(path)})
        self._irregular = irregular
        return dict(sorted(found.items()))

    async def _refresh(self, changed: set[Path] | None, *, publish: bool = True) -> None:
        """Reload `changed` files (None: all, at start, when nothing is held) and the
        files that appeared, vanished, changed unseen or are held."""
        # The first read: a whole directory of long-lived objects (kit/collector.py; 30,000
        # objects: 7.0 → 5.0 s). The collector is off for the process while it awaits, so
        # what the start allocates meanwhile (the first publish) is frozen with it.
        if changed is None:
            with gc_paused():
                await self._read(None, publish)
                gc.freeze()
        else:
            await self._read(changed, publish)

    async def _read(self, changed: set[Path] | None, publish: bool) -> None:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            initial = changed is None
            files = self._scan()
            for f in [f for f in {*self._applied, *self._unsettled} if f not in files]:
                if f not in self._applied:
                    self._unsettled.pop(f, None)  # held, never applied, now gone
                elif initial or self._settled(f, None, now):
                    self._forget(f)
            for f, stamp in files.items():
                if changed is not None and f not in changed and f not in self._unsettled \
                        and stamp == self._applied.get(f):
                    continue  # no event, nothing held, and the version applied is still there
                objects, errors = await asyncio.to_thread(self._load, [f])
                objects, errors = tuple(objects), tuple(errors)
                if _stamp(f) != stamp:  # written while we read it: wait for it to settle
                    self._settled(f, _stamp(f), now)
                    continue
                if not initial and self._suspicious(f, stamp, objects, errors) \
                        and not self._settled(f, stamp, now, complete=self._complete(f, objects, errors)):
                    continue
                self._unsettled.pop(f, None)
                self._applied[f] = stamp
                self._apply(f, objects, errors)
            if publish:
                await self._republish()
            if self._unsettled:
                self._held.set()

    def _suspicious(self, file: Path, stamp: _Stamp, objects: tuple[Resource, ...],
                    errors: tuple[ManifestError, ...]) -> bool:
        """Could this be a half-written save? (see the module docstring)"""
        if not self._complete(file, objects, errors):
            return True
        applied = self._applied.get(file)
        return applied is not None and applied.inode == stamp.inode  # in place: maybe not finished

    def _complete(self, file: Path, objects: tuple[Resource, ...], errors: tuple[ManifestError, ...]) -> bool:
        """Valid and keeping every object the file serves: not cut short (a new file
        takes nothing away)."""
        if errors:
            return False
        kept = {o.key for o in objects}
        return all(o.key in kept for o in self._serving.get(file, ()))

    def _settled(self, file: Path, stamp: _Stamp | None, now: float, *, complete: bool = False) -> bool:
        """True once `file` has been at `stamp` (None: absent) for `quiet_s`, or, when the
        version read is `complete`, once the file has been held for `cap_s` (writes in place
        with no pause would otherwise postpone it for good); otherwise it is (still) held."""
        held = self._unsettled.get(file)
        if held is None or held.version != stamp:
            held = self._unsettled[file] = _Hold(stamp, now, now if held is None else held.first)
        return now - held.since >= self._quiet_s or (complete and now - held.first >= self._cap_s)

    def _serve(self, file: Path, objects: tuple[Resource, ...] | None) -> None:
        """`file` serves `objects` from now on (None: nothing, it is forgotten)."""
        before = self._serving.pop(file, ())
        if objects is not None:
            self._serving[file] = objects
        if before is objects:
            return
        old, new = Counter(o.key for o in before), Counter(o.key for o in objects or ())
        for key in old.keys() | new.keys():
            files = tuple(f for f in self._definitions.get(key, ()) if f != file) + (file,) * new[key]
            if len(files) > 1:
                self._shared.add(key)
            else:
                self._shared.discard(key)
            if files:
                self._definitions[key] = files
            else:
                del self._definitions[key]

    def _forget(self, file: Path) -> None:
        self._serve(file, None)
        self._kept.pop(file, None)
        self._applied.pop(file, None)
        self._unsettled.pop(file, None)
        if self._errors.pop(file, None) is not None:
            log.info("broken manifest deleted: file=%s", file, extra={"file": str(file)})

    def _apply(self, file: Path, objects: tuple[Resource, ...], errors: tuple[ManifestError, ...]) -> None:
        previous = self._serving.get(file, ())
        if not errors:
            self._serve(file, objects)
            if self._errors.pop(file, None) is not None:
                log.info("manifest fixed: file=%s objects=%d", file, len(objects), extra={"file": str(file)})
            return
        if self._errors.get(file) != errors:  # logged when they appear or change, not per read
            for e in errors:
                log.warning("manifest rejected, last good version keeps serving: file=%s error=%s", file, e,
                            extra={"file": str(file), "error": str(e)})
        self._errors[file] = errors
        broken = {e.object_key for e in errors}
        if None in broken:
            return  # the file as a whole is unusable: keep all of its last good version
        kept = tuple(o for o in previous if o.key in broken)
        self._serve(file, objects + kept)

    async def _republish(self) -> None:
        state, before = self._state(), self._published
        if state == before or self._publish is None:
            return
        self._published = state
        if before is None or state.objects != before.objects:
            self.publishes += 1
        try:
            await self._publish(state)
        except Exception:
            log.exception("publish failed: directory=%s", self.directory, extra={"directory": str(self.directory)})

    def _merged(self) -> tuple[tuple[Resource, ...], ...]:
        """Every file's serving objects as one part per file, the first definition of each
        object winning (the later ones are recorded in `_duplicates`). A file with no key
        defined twice anywhere is its serving tuple as it is (its identity is kept while
        the file is unchanged: what is derived from it is kept too, `PartsFilter`)."""
        parts: list[tuple[Resource, ...]] = []
        owner: dict[ObjectKey, Path] = {}
        sharing = {f for key in self._shared for f in self._definitions[key]}
        reported, self._duplicates = self._duplicates, {}
        for f in sorted(self._serving):  # held deleted files included: they serve until settled
            objects = self._serving[f]
            if f not in sharing:
                parts.append(objects)
                continue
            kept: list[Resource] = []
            for obj in objects:
                if obj.key in owner:
                    msg = f"{obj.key}: duplicate: already defined in {owner[obj.key]}; ignored"
                    self._duplicates[f] = self._duplicates.get(f, ()) + (msg,)
                    if msg not in reported.get(f, ()):  # logged when it appears, not per merge
                        log.warning("duplicate object ignored: file=%s object=%s first=%s", f, obj.key,
                                    owner[obj.key], extra={"file": str(f), "object": str(obj.key)})
                    continue
                owner[obj.key] = f
                kept.append(obj)
            part = tuple(kept)
            if self._kept.get(f) != part:
                self._kept[f] = part
            parts.append(self._kept[f])
        for f in [f for f in self._kept if f not in sharing]:
            del self._kept[f]
        return tuple(parts)


def _note(file: Path, rule: str) -> ManifestError:
    """An error of the file that names no object: it rejects none (`object_key` is None)."""
    return ManifestError(file=str(file), index=None, kind=None, namespace=None, name=None, path="", rule=rule)
