"""Files other processes read while we write them (status view, canary state, rollout
commands): written to a temporary file beside the target and renamed over it, so a reader
sees the old document or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomically(path: Path, doc: Any, *, indent: int | None = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(encode(doc, indent=indent))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode(doc: Any, *, indent: int | None = None) -> str:
    """`json.dumps(doc, indent=indent)`, the same text. Without indent, the lists at the
    top of a dict are encoded item by item: each item in C (only a one-shot encode without
    indent runs in C; `json.dump` and any indent run in Python, ~1 s for a status view of
    20,000 objects), and between items the GIL can pass to the event loop (one C call for
    the whole view would hold it ~0.2 s)."""
    if indent is not None or not isinstance(doc, dict):
        return json.dumps(doc, indent=indent)
    parts = []
    for key, value in doc.items():
        text = "[" + ", ".join(map(json.dumps, value)) + "]" if isinstance(value, list) else json.dumps(value)
        parts.append(json.dumps(key) + ": " + text)
    return "{" + ", ".join(parts) + "}"
