"""`spec.extensions` of a ModelServer: the part of the spec that plugins own.

What the field may hold depends on the plugins installed where the manifests are
compiled, so the API model keeps it as free-form JSON (one key per plugin, named after
it; in the CRD `x-kubernetes-preserve-unknown-fields`). A plugin that reads a key
declares a pydantic model for its value (`Plugin.extension`); `parse_extensions` checks
every key of one server against the installed plugins' models. A key no plugin owns, or
a value its model refuses, is a (field path, rule) problem worded like every other
validation error (`spec.extensions.cors.maxAge: -1 must be at least 0`), never a
traceback, even when a plugin's own validator raises something unexpected.

The engine (`resolve`) reports the problems on the ModelServer, which is then not served
(fail closed: a plugin may enforce a policy); `modelroute validate` reports them per
file and document, as the loader does for every other rule (`load_manifests(...,
extensions=...)`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from routing_engine.api.errors import format_path, from_pydantic, one_line

ExtensionModels = Mapping[str, type[BaseModel]]  # plugin name (= its key) → the model of its value

FIELD = ("spec", "extensions")


def parse_extensions(raw: Mapping[str, Any], models: ExtensionModels
                     ) -> tuple[tuple[tuple[str, BaseModel], ...], tuple[tuple[str, str], ...]]:
    """(each key's parsed value, by key), and every problem as (field path, rule)."""
    values: list[tuple[str, BaseModel]] = []
    problems: list[tuple[str, str]] = []
    for name in sorted(raw):
        where = (*FIELD, name)
        model = models.get(name)
        if model is None:
            problems.append((format_path(where), _unknown_key(name, models)))
            continue
        try:
            values.append((name, model.model_validate(raw[name])))
        except ValidationError as err:
            problems.extend(from_pydantic(model, detail, prefix=where) for detail in err.errors(include_url=False))
        except Exception as err:  # noqa: BLE001 - a plugin's validator failing its own way
            rule = f"could not be validated by plugin {name} ({type(err).__name__}: {one_line(str(err))[:200]})"
            problems.append((format_path(where), rule))
    return tuple(values), tuple(problems)


def _unknown_key(name: str, models: ExtensionModels) -> str:
    if not models:
        return "no installed plugin owns this key (no installed plugin reads spec.extensions)"
    close = difflib.get_close_matches(name, sorted(models), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"no installed plugin owns this key ({hint}installed: {', '.join(sorted(models))})"
