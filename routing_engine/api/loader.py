"""Manifests in, validated objects and one-line errors out: the only way YAML becomes models.

Reads what a user would `kubectl apply`: files and directories (recursively; `*.yaml`,
`*.yml`, `*.json`; hidden files such as editor swap files skipped), multi-document YAML,
`kind: List`. Every problem becomes a `ManifestError`; nothing here raises for bad input,
because one broken file must never take down the routes defined by the others. The file
provider and `modelroute validate` call `load_manifests`; the Kubernetes provider, which
gets one object at a time from the API server, calls `parse_document`.

`spec.extensions` (the keys plugins own) is checked only when the caller passes the
installed plugins' models (`extensions=`, as `modelroute validate` does): what a key may
hold is known only to the plugins, and the engine checks it again when it compiles.

Decisions: document indexes are 1-based; a file with a YAML syntax error contributes no
objects at all (a half-saved file must not half-apply); an object defined twice keeps its
first definition and the later one is reported. In a directory only regular files are
read: a FIFO, socket or device named `*.yaml` would block the read forever, so it is
skipped with a warning (a path named explicitly is read as given: `-f <(cmd)` is a FIFO).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from routing_engine.api.errors import ManifestError, format_path, from_pydantic, one_line
from routing_engine.api.extensions import ExtensionModels, parse_extensions
from routing_engine.api.resources import DEFAULT_NAMESPACE, KIND_BY_NAME, ModelServer, ObjectKey, Resource, Secret
from routing_engine.api.types import show
from routing_engine.envoy_rules import certificate_problem, jwks_problem

__all__ = ["MANIFEST_SUFFIXES", "ManifestError", "load_manifests", "load_text", "parse_document"]

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # CSafeLoader has SafeLoader's interface; a class chosen at run time is no base to a checker
    _BaseLoader = yaml.SafeLoader
else:
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml if built


class _Loader(_BaseLoader):
    """Safe loading that, like kubectl, rejects a key written twice in one mapping instead
    of silently keeping the last (a second `routing:` block would hide the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f'duplicate key "{key_node.value[:60]}"', key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# The Kubernetes API server refuses request bodies over 3 MiB; a manifest file larger than
# that is a mistake (a log or a model file with a .yaml name), and is refused unread.
MAX_MANIFEST_BYTES = 3 * 1024 * 1024
# YAML aliases can make a tiny file expand to billions of values or refer to itself; both
# are cut off before validation walks them.
MAX_VALUES = 100_000
MAX_DEPTH = 64
_SUPPORTED = ", ".join(f"{cls.KIND} ({cls.API_VERSION})" for cls in KIND_BY_NAME.values())


def load_manifests(paths: Iterable[str | Path], *, regular_files_only: bool = False,
                   extensions: ExtensionModels | None = None) -> tuple[list[Resource], list[ManifestError]]:
    """All objects and all errors from `paths`, in a deterministic order (paths as given,
    directory contents sorted). Duplicates are detected across all files.
    `regular_files_only` (a watcher's reads): a named path that is not a regular file is
    an error rather than a read that may never return. `extensions`: the installed
    plugins' models, to check ModelServers' `spec.extensions` against (None: unchecked)."""
    objects: list[Resource] = []
    errors: list[ManifestError] = []
    seen: dict[ObjectKey, str] = {}
    for path in paths:
        for file in _manifest_files(Path(path), errors):
            text = _read(file, errors, regular_only=regular_files_only)
            if text is None:
                continue
            found, errs = _load_text(text, str(file), seen, extensions)
            objects.extend(found)
            errors.extend(errs)
    return objects, errors


def load_text(text: str, source: str, *, extensions: ExtensionModels | None = None
              ) -> tuple[list[Resource], list[ManifestError]]:
    """Objects and errors from one file's text; `source` names it in errors and decides
    JSON (`*.json`) or YAML parsing."""
    size = len(text.encode())
    if size > MAX_MANIFEST_BYTES:
        return [], [_too_large(source, size)]
    return _load_text(text, source, {}, extensions)


def _load_text(text: str, source: str, seen: dict[ObjectKey, str], extensions: ExtensionModels | None = None
               ) -> tuple[list[Resource], list[ManifestError]]:
    """`load_text`, with `seen` (object → where it was defined) shared across files."""
    docs, syntax_error = _parse_text(text, source)
    if syntax_error is not None:
        return [], [syntax_error]
    objects: list[Resource] = []
    errors: list[ManifestError] = []
    for index, doc in enumerate(docs, start=1):
        if doc is None:  # an empty document, e.g. a trailing `---`
            continue
        for item, prefix in _expand_lists(doc, source, index, errors):
            key = _identity(item)
            if key is not None and key in seen:
                rule = f"duplicate: {key} is already defined at {seen[key]}"
                errors.append(_error(source, index, item, format_path(prefix), rule))
                continue
            if key is not None:  # even an invalid first definition claims the name
                seen[key] = f"{source}#{index}"
            obj, errs = _parse(item, source, index, prefix)
            if isinstance(obj, Secret):
                errs = [_error(source, index, item, format_path((*prefix, *where)), rule)
                        for where, rule in secret_problems(obj)]
                obj = None if errs else obj
            if extensions is not None and not errs:
                obj, errs = _with_extensions(obj, item, source, index, prefix, extensions)
            errors.extend(errs)
            if obj is not None:
                objects.append(obj)
    return objects, errors


def secret_problems(secret: Secret) -> list[tuple[tuple[str, ...], str]]:
    """(field path, rule) for material in a Secret that Envoy would refuse: TLS
    (`tls.crt`/`tls.key`) and JWKS (`jwks`), the keys ModelServers read. Files are checked
    with it (so a broken rotation keeps the last good version of the file serving); in a
    cluster a ModelServer using such a Secret fails closed with the same reason."""
    problems: list[tuple[tuple[str, ...], str]] = []
    def field(key: str) -> tuple[str, ...]:
        return ("stringData" if key in secret.string_data else "data", key)
    if "tls.crt" in secret.data or "tls.crt" in secret.string_data or secret.type == "kubernetes.io/tls":
        refused = certificate_problem(secret.value("tls.crt"), secret.value("tls.key"))
        if refused is not None:
            where = "tls.key" if refused.startswith("tls.key") else "tls.crt"
            problems.append((field(where), f"Envoy would refuse it: {refused}"))
    if "jwks" in secret.data or "jwks" in secret.string_data:
        raw = secret.value("jwks")
        try:
            refused = jwks_problem(raw.decode()) if raw is not None else "is not valid base64"
        except UnicodeDecodeError:
            refused = "is not UTF-8 text"
        if refused is not None:
            problems.append((field("jwks"), f"Envoy would refuse this JWKS: it {refused}"))
    return problems


def parse_document(doc: object, *, source: str, index: int, extensions: ExtensionModels | None = None
                   ) -> tuple[Resource | None, list[ManifestError]]:
    """One already-decoded object (e.g. from the Kubernetes API) → its model, or errors.
    `extensions`: as `load_manifests`'s (the admission webhook passes the installed
    plugins' models)."""
    obj, errors = _parse(doc, source, index, ())
    if extensions is not None and not errors:
        obj, errors = _with_extensions(obj, doc, source, index, (), extensions)
    return obj, errors


def _with_extensions(obj: Resource | None, item: object, source: str, index: int, prefix: tuple[str | int, ...],
                     extensions: ExtensionModels) -> tuple[Resource | None, list[ManifestError]]:
    """`obj`, or the errors of a ModelServer's `spec.extensions` against the plugins' models."""
    if not isinstance(obj, ModelServer) or not obj.spec.extensions:
        return obj, []
    errors = [_error(source, index, item, format_path(prefix) + ("." if prefix else "") + where, rule)
              for where, rule in parse_extensions(obj.spec.extensions, extensions)[1]]
    return (None if errors else obj), errors


def _parse(doc: object, source: str, index: int, prefix: tuple[str | int, ...]) -> tuple[Resource | None, list[ManifestError]]:
    if not isinstance(doc, dict):
        where = format_path(prefix)
        return None, [ManifestError(source, index, None, None, None, where, f"{show(doc)} is not an object (a mapping with apiVersion, kind, metadata)")]
    too_big = _shape_problem(doc)
    if too_big is not None:
        return None, [_error(source, index, doc, format_path(prefix), too_big)]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    problem = _check_type(api_version, kind)
    if problem is not None:
        field, rule = problem
        return None, [_error(source, index, doc, format_path(prefix + (field,)), rule)]
    cls = KIND_BY_NAME[str(kind)]
    try:
        return cls.model_validate(doc, by_alias=True, by_name=False), []
    except ValidationError as err:
        errors = []
        for detail in err.errors(include_url=False):
            path, rule = from_pydantic(cls, detail, prefix=prefix, redact=cls is Secret)
            errors.append(_error(source, index, doc, path, rule))
        return None, errors
    except Exception as err:  # noqa: BLE001 - last guard: bad input must never crash a provider
        rule = f"could not be validated ({type(err).__name__}: {one_line(str(err))[:200]}); please report this"
        return None, [_error(source, index, doc, format_path(prefix), rule)]


def _shape_problem(doc: object) -> str | None:
    """Why `doc` is too large or too deep to validate, walking it without recursion."""
    stack: list[tuple[object, int]] = [(doc, 0)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"holds more than {MAX_VALUES} values (after expanding YAML aliases) or refers to itself"
        if depth > MAX_DEPTH:
            return f"is nested more than {MAX_DEPTH} levels deep"
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None


def _check_type(api_version: Any, kind: Any) -> tuple[str, str] | None:
    """(field, rule) when apiVersion/kind do not name a supported kind."""
    if kind is None:
        return "kind", f"is required (supported: {_SUPPORTED})"
    if not isinstance(kind, str) or kind not in KIND_BY_NAME:
        return "kind", f"{show(kind)} is not supported (supported: {_SUPPORTED})"
    expected = KIND_BY_NAME[kind].API_VERSION
    if api_version is None:
        return "apiVersion", f"is required (use {expected})"
    if api_version != expected:
        return "apiVersion", f"{show(api_version)} is not supported for {kind} (use {expected})"
    return None


def _expand_lists(doc: object, source: str, index: int, errors: list[ManifestError]) -> Iterator[tuple[object, tuple[str | int, ...]]]:
    """`kind: List` (what `kubectl get -o yaml` prints) → its items, with `items[i]` paths."""
    if not (isinstance(doc, dict) and doc.get("kind") == "List"):
        yield doc, ()
        return
    items = doc.get("items")
    if not isinstance(items, list):
        errors.append(ManifestError(source, index, "List", None, None, "items", f"{show(items)} must be a list of objects"))
        return
    for i, item in enumerate(items):
        yield item, ("items", i)


def _names(doc: object) -> tuple[str | None, str | None, str | None]:
    """(kind, namespace, name) of a raw document, as far as they can be read."""
    kind = name = namespace = None
    if isinstance(doc, dict):
        kind = doc.get("kind") if isinstance(doc.get("kind"), str) else None
        meta = doc.get("metadata")
        if isinstance(meta, dict):
            name = meta.get("name") if isinstance(meta.get("name"), str) else None
            ns = meta.get("namespace")
            namespace = ns if isinstance(ns, str) else DEFAULT_NAMESPACE
    return kind, namespace, name


def _identity(doc: object) -> ObjectKey | None:
    """The key a raw document claims, valid or not: duplicates are judged on this."""
    kind, namespace, name = _names(doc)
    return ObjectKey(kind, namespace or DEFAULT_NAMESPACE, name) if kind and name else None


def _error(source: str, index: int, doc: object, path: str, rule: str) -> ManifestError:
    """An error about `doc`, naming its kind/namespace/name as far as they can be read."""
    kind, namespace, name = _names(doc)
    return ManifestError(source, index, kind, namespace, name and name[:80], path, rule)


def _parse_text(text: str, source: str) -> tuple[list[Any], ManifestError | None]:
    """The documents of a file, or the one error that makes the whole file unusable."""
    try:
        if source.endswith(".json"):
            return [json.loads(text)], None
        return list(yaml.load_all(text, Loader=_Loader)), None
    except json.JSONDecodeError as err:
        rule = f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        rule = f"not valid YAML: {err.problem or err.context}{at}"
    except yaml.YAMLError as err:
        rule = f"not valid YAML: {one_line(str(err))}"
    except RecursionError:
        rule = "is nested too deeply to be read"
    except ValueError as err:  # e.g. an integer with more digits than Python converts
        rule = f"cannot be read: {one_line(str(err))[:200]}"
    return [], ManifestError(source, None, None, None, None, "", rule)


def _manifest_files(path: Path, errors: list[ManifestError]) -> Iterator[Path]:
    """A file as given, or a directory's regular manifest files, sorted, hidden ones skipped."""
    if path.is_dir():
        found: list[Path] = []
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(
                Path(root, f) for f in files if f.endswith(MANIFEST_SUFFIXES) and not f.startswith(".")
            )
        for file in sorted(found):
            kind = _special_kind(file)
            if kind is None:
                yield file
            else:
                log.warning("%s: not a regular file (%s); skipped", file, kind)
    elif path.exists():
        yield path
    else:
        errors.append(ManifestError(str(path), None, None, None, None, "", "no such file or directory"))


def _special_kind(file: Path) -> str | None:
    """What `file` is when it is not a regular file (a read could block), else None."""
    try:
        mode = os.stat(file).st_mode
    except OSError:
        return None  # gone or unreadable: `_read` reports why
    if stat.S_ISREG(mode):
        return None
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or other special file"


def _too_large(source: str, size: int) -> ManifestError:
    return ManifestError(source, None, None, None, None, "",
                         f"is {size} bytes; a manifest may be at most {MAX_MANIFEST_BYTES} bytes "
                         "(3 MiB, the Kubernetes API server's limit)")


def _read(file: Path, errors: list[ManifestError], *, regular_only: bool = False) -> str | None:
    try:
        # O_NONBLOCK (regular_only): opening a FIFO does not wait for a writer; fstat then refuses it.
        flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NONBLOCK if regular_only else 0)
        fd = os.open(file, flags)
        with open(fd, "rb") as handle:
            if regular_only and not stat.S_ISREG(os.fstat(fd).st_mode):
                errors.append(ManifestError(str(file), None, None, None, None, "", "is not a regular file"))
                return None
            data = handle.read(MAX_MANIFEST_BYTES + 1)  # never more, whatever the file's size
        if len(data) > MAX_MANIFEST_BYTES:
            errors.append(_too_large(str(file), file.stat().st_size))
            return None
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        errors.append(ManifestError(str(file), None, None, None, None, "", f"is not UTF-8 text (byte {err.start})"))
    except OSError as err:
        errors.append(ManifestError(str(file), None, None, None, None, "", f"cannot be read: {err.strerror or err}"))
    return None
