"""The file provider's merge, kept up to date per file (the keys each file defines, the
keys defined twice), equals merging every file from scratch, on random edit sequences;
and a file with no duplicate is merged as the very tuple it serves (what is derived from
it is then kept per file: `PartsFilter`)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings, strategies as st

from controller.local.file_provider import FileProvider
from routing_engine.api.resources import ModelInfer, ObjectKey, Resource

NAMES = ("a", "b", "c", "d", "e", "f")
FILES = tuple(Path(f"/m/{n}.yaml") for n in ("1", "2", "3", "4"))


def infer(name: str, replicas: int) -> ModelInfer:
    return ModelInfer.model_validate({"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
                                      "metadata": {"name": name, "namespace": "default"},
                                      "spec": {"modelRef": {"name": "m"}, "replicas": replicas}})


POOL = {(n, r): infer(n, r) for n in NAMES for r in (1, 2)}

edits = st.lists(st.tuples(st.sampled_from(FILES),
                           st.none() | st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from((1, 2))),
                                                max_size=4)),
                 min_size=1, max_size=25)


def from_scratch(serving: dict[Path, tuple[Resource, ...]]) -> tuple[list[Resource], dict[Path, list[ObjectKey]]]:
    """The first definition of each key wins, by file path and order in the file."""
    merged: list[Resource] = []
    seen: set[ObjectKey] = set()
    duplicates: dict[Path, list[ObjectKey]] = {}
    for f in sorted(serving):
        for obj in serving[f]:
            if obj.key in seen:
                duplicates.setdefault(f, []).append(obj.key)
            else:
                seen.add(obj.key)
                merged.append(obj)
    return merged, duplicates


@settings(max_examples=300, deadline=None)
@given(edits)
def test_merge_kept_per_file_equals_merge_from_scratch(steps: list[tuple[Path, list[tuple[str, int]] | None]]) -> None:
    provider = FileProvider(Path("/m"))
    serving: dict[Path, tuple[Resource, ...]] = {}
    for file, content in steps:
        if content is None:
            provider._forget(file)
            serving.pop(file, None)
        else:
            objects = tuple(POOL[c] for c in content)
            provider._apply(file, objects, ())
            serving[file] = objects
        parts = provider._merged()
        merged, duplicates = from_scratch(serving)
        assert [o for part in parts for o in part] == merged
        assert {f: [m.split(": duplicate")[0] for m in msgs] for f, msgs in provider._duplicates.items()} == \
            {f: [str(k) for k in keys] for f, keys in duplicates.items()}
        for f in sorted(serving):
            if f not in duplicates and not any(o.key in {p.key for g in sorted(serving) if g != f for p in serving[g]}
                                               for o in serving[f]):
                assert any(part is serving[f] for part in parts) or not serving[f]
