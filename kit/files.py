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
    write_text_atomically(path, json.dumps(doc, indent=indent))


def write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
