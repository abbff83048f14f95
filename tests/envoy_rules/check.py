"""The property of issue #12, checked on a batch of manifest sets: a set either fails
`modelroute validate` with errors that name a field, or its compiled config passes
`envoy --mode validate`. Sets live in their own namespaces and ports, so a batch is
compiled and checked by Envoy at once; when Envoy refuses a batch, each set is checked
alone to name the culprit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from modelroute.envoy_check import validate
from routing_engine import engine
from routing_engine.api.loader import load_text
from routing_engine.api.resources import ModelInfer, Resource
from routing_engine.world import BackendEndpoint, Target, World


@dataclass
class Outcome:
    refused_by_validate: int = 0
    accepted_by_envoy: int = 0
    envoy_runs: int = 0
    problems: list[str] = field(default_factory=list)


def _world(objects: Sequence[Resource]) -> World:
    """Each ModelInfer with one endpoint that loads its declared LoRA adapters and has a
    load-aware weight, so EDS metadata and weights reach Envoy too."""
    endpoints = {o.key: (BackendEndpoint("127.0.0.1", 9000, adapters=tuple(a.name for a in o.spec.adapters),
                                         weight=3),)
                 for o in objects if isinstance(o, ModelInfer)}
    return World(objects=tuple(objects), endpoints=endpoints)


def _envoy_accepts(objects: Sequence[Resource], outcome: Outcome) -> str | None:
    compiled = engine.compile(_world(objects), Target(listen_address="127.0.0.1"))
    outcome.envoy_runs += 1
    verdict = validate(engine.static_bootstrap(compiled.resources))
    return None if verdict.ok else verdict.message


def check_batch(sets: Sequence[list[dict[str, Any]]]) -> Outcome:
    outcome = Outcome()
    passed: list[tuple[int, list[Resource]]] = []
    for index, docs in enumerate(sets):
        text = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)
        objects, errors = load_text(text, f"set{index}.yaml")
        if errors:
            outcome.refused_by_validate += 1
            for error in errors:
                if not error.path or not error.rule or not (error.kind and error.name):
                    outcome.problems.append(f"set {index}: an error without object or field path: {error}")
            continue
        passed.append((index, objects))
    if not passed:
        return outcome
    refused = _envoy_accepts([o for _, objects in passed for o in objects], outcome)
    if refused is None:
        outcome.accepted_by_envoy += len(passed)
        return outcome
    for index, objects in passed:  # name the culprit(s)
        alone = _envoy_accepts(objects, outcome)
        if alone is None:
            outcome.accepted_by_envoy += 1
        else:
            shown = yaml.safe_dump_all(sets[index], sort_keys=False, allow_unicode=True)
            outcome.problems.append(f"set {index} passed validate but Envoy refused it:\n{alone[-1500:]}\n{shown[:4000]}")
    if not outcome.problems:
        outcome.problems.append(f"Envoy refused the batch but no set alone: {refused[-1500:]}")
    return outcome
