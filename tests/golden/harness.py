"""Golden cases: manifests in, one YAML file per Envoy resource type (plus statuses) out.

A case is a directory under `tests/golden/` holding `input.yaml` (manifests, as a user
would `kubectl apply` them) and optionally `world.yaml` (what the controller and the
Envoy add: `endpoints` per ModelInfer, `live_weights` per ModelRoute, the `target`; and
`plugins`, installed next to the built-in ones: `module:Class` as an entry point names
one, e.g. `tests.support.plugins:RequestHeadersPlugin`).
Every file in `examples/seeds/` is a case too, under `tests/golden/seeds/<stem>/`, so a
new seed is covered without copying it; `seeds/all/` compiles all seeds together.
`pytest --update-golden` rewrites the outputs and deletes outputs whose input is gone.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from routing_engine import engine, plugins, serialize
from routing_engine.api.loader import load_manifests
from routing_engine.api.resources import ObjectKey
from routing_engine.incremental import Translator
from routing_engine.world import BackendEndpoint, Compiled, Target, World

GOLDEN = Path(__file__).resolve().parent
REPO = GOLDEN.parents[1]
SEEDS = REPO / "examples" / "seeds"
INPUTS = ("input.yaml", "world.yaml")
OUTPUTS = (*serialize.SECTION_NAMES.values(), "statuses")


@dataclass(frozen=True)
class Case:
    name: str
    directory: Path  # where the expected outputs live
    manifests: tuple[Path, ...]
    world_file: Path | None = None


def cases() -> list[Case]:
    found = [
        Case(d.name, d, (d / "input.yaml",), d / "world.yaml" if (d / "world.yaml").exists() else None)
        for d in sorted(GOLDEN.iterdir())
        if (d / "input.yaml").exists()
    ]
    seeds = sorted(SEEDS.glob("*.yaml"))
    found += [Case(f"seeds/{s.stem}", GOLDEN / "seeds" / s.stem, (s,)) for s in seeds]
    if seeds:
        found.append(Case("seeds/all", GOLDEN / "seeds" / "all", tuple(seeds)))
    return found


def _key(text: str, kind: str) -> ObjectKey:
    namespace, _, name = text.rpartition("/")
    return ObjectKey(kind, namespace or "default", name)


def load_plugins(case: Case) -> tuple[plugins.Plugin, ...]:
    """The built-in plugins plus those the case's world.yaml names, loaded as entry points are."""
    extra: dict[str, Any] = yaml.safe_load(case.world_file.read_text()) if case.world_file else {}
    named = [metadata.EntryPoint(name=value, value=value, group=plugins.ENTRY_POINT_GROUP).load()
             for value in extra.get("plugins") or ()]
    return plugins.with_builtin(p() if isinstance(p, type) else p for p in named)


def load_world(case: Case) -> tuple[World, Target, list[str]]:
    objects, errors = load_manifests(case.manifests)
    extra: dict[str, Any] = yaml.safe_load(case.world_file.read_text()) if case.world_file else {}
    endpoints = {
        _key(infer, "ModelInfer"): tuple(BackendEndpoint(**{k: tuple(v) if isinstance(v, list) else v for k, v in e.items()})
                                         for e in replicas)
        for infer, replicas in (extra.get("endpoints") or {}).items()
    }
    weights = {_key(r, "ModelRoute"): (int(w[0]), int(w[1])) for r, w in (extra.get("live_weights") or {}).items()}
    target_fields = dict(extra.get("target") or {})
    if "namespaces" in target_fields:
        target_fields["namespaces"] = frozenset(target_fields["namespaces"])
    if "servers" in target_fields:
        target_fields["servers"] = frozenset(_key(s, "ModelServer") for s in target_fields["servers"])
    world = World(objects=tuple(objects), endpoints=endpoints, live_weights=weights)
    relative = [str(e).replace(str(REPO) + "/", "") for e in errors]
    return world, Target(**target_fields), relative


def _statuses(compiled: Compiled, manifest_errors: list[str]) -> dict[str, Any]:
    statuses = {
        str(key): {
            "phase": status.phase,
            **({"service_endpoint": status.service_endpoint} if status.service_endpoint else {}),
            **({"active_routes": status.active_routes} if status.active_routes is not None else {}),
            "conditions": [
                {"type": c.type, "status": c.status, "reason": c.reason, **({"message": c.message} if c.message else {})}
                for c in status.conditions
            ],
        }
        for key, status in compiled.statuses.items()
    }
    return {"manifest_errors": manifest_errors, "statuses": statuses}


def render(case: Case) -> tuple[dict[str, str], dict[str, Any]]:
    """Expected file name → text, and the static bootstrap for envoy validate."""
    texts, bootstrap, _ = render_all(case)
    return texts, bootstrap


def render_all(case: Case) -> tuple[dict[str, str], dict[str, Any], Compiled]:
    world, target, errors = load_world(case)
    compiled = engine.compile(world, target, translator=Translator(load_plugins(case)))
    docs: dict[str, Any] = dict(serialize.sections(compiled.resources))
    docs["statuses"] = _statuses(compiled, errors)
    texts = {f"{name}.yaml": yaml.safe_dump(docs[name], sort_keys=False, width=120) for name in OUTPUTS}
    return texts, engine.static_bootstrap(compiled.resources), compiled


def write(case: Case, texts: dict[str, str]) -> None:
    case.directory.mkdir(parents=True, exist_ok=True)
    for stale in case.directory.iterdir():
        if stale.is_file() and stale.name not in texts and stale.name not in INPUTS:
            stale.unlink()
    for name, text in texts.items():
        (case.directory / name).write_text(text)


def stale_directories(live: list[Case]) -> Iterator[Path]:
    """Output directories whose input is gone (a removed case or seed)."""
    keep = {c.directory for c in live}
    for directory in sorted([*GOLDEN.iterdir(), *(GOLDEN / "seeds").glob("*")]):
        if directory.is_dir() and directory not in keep and directory.name not in {"seeds", "__pycache__"}:
            if any(directory.glob("*.yaml")) and not (directory / "input.yaml").exists():
                yield directory


def remove(directory: Path) -> None:
    shutil.rmtree(directory)
