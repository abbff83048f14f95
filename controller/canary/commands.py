"""The channel between `modelroute rollout promote|abort|pause|resume` and a running
`modelroute up`: a command queue of small JSON files under `DIR/.modelroute/rollout/`.

Why files and not an HTTP endpoint: the CLI already finds `modelroute up` by its
directory (that is where the status is), so it needs no port to discover and there is no
listener to secure — only the user who can write the run directory can command it.

The CLI writes `<id>.json` atomically (temp file + rename) and waits for `<id>.reply.json`.
The runner claims a command by renaming it (so the CLI can withdraw an unclaimed one when
nobody answers: `withdraw` fails once it is claimed), applies it, and writes the reply
atomically. Replies say whether it applied and the rollout's state afterwards.

`FileCommands` is this queue as the runner sees it (`claim_all`, `answer`); in a cluster
the same two methods are served by `controller.kubernetes.canary.AnnotationCommands`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.files import write_json_atomically

COMMANDS_DIR = "rollout"
_REPLY = ".reply.json"
_CLAIMED = ".claimed"


@dataclass(frozen=True, slots=True)
class RolloutCommand:
    id: str
    route: str  # "ns/name"
    command: str


def submit(directory: Path, route: str, command: str) -> RolloutCommand:
    """Queue a command (the CLI side)."""
    cmd = RolloutCommand(id=f"{time.time_ns()}-{uuid.uuid4().hex[:8]}", route=route, command=command)
    write_json_atomically(Path(directory) / f"{cmd.id}.json", {"id": cmd.id, "route": route, "command": command},
                          indent=None)
    return cmd


def reply_of(directory: Path, cmd: RolloutCommand) -> dict[str, Any] | None:
    """The runner's reply, once there (and then removed); None while waiting."""
    path = Path(directory) / f"{cmd.id}{_REPLY}"
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return doc


def withdraw(directory: Path, cmd: RolloutCommand) -> bool:
    """Remove a command nobody claimed; False when the runner already has it."""
    try:
        (Path(directory) / f"{cmd.id}.json").unlink()
    except FileNotFoundError:
        return False
    return True


def claim_all(directory: Path) -> Iterator[RolloutCommand | str]:
    """Commands waiting, oldest first, each claimed (the runner side). A malformed file
    yields its id (a str) so the runner can reply with an error."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.json")):
        if path.name.endswith(_REPLY) or path.name.startswith("."):
            continue
        claimed = path.with_name(path.name + _CLAIMED)
        try:
            os.replace(path, claimed)
        except FileNotFoundError:
            continue  # withdrawn meanwhile
        cmd_id = path.name[: -len(".json")]
        try:
            doc = json.loads(claimed.read_text())
            yield RolloutCommand(id=cmd_id, route=str(doc["route"]), command=str(doc["command"]))
        except (OSError, ValueError, KeyError, TypeError):
            yield cmd_id
        finally:
            claimed.unlink(missing_ok=True)


def answer(directory: Path, cmd_id: str, *, ok: bool, message: str, canary: dict[str, Any] | None = None) -> None:
    write_json_atomically(Path(directory) / f"{cmd_id}{_REPLY}", {"ok": ok, "message": message, "canary": canary},
                          indent=None)


class FileCommands:
    """The runner's side of the queue in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def claim_all(self) -> Iterator[RolloutCommand | str]:
        return claim_all(self.directory)

    def answer(self, cmd_id: str, *, ok: bool, message: str, canary: dict[str, Any] | None = None) -> None:
        answer(self.directory, cmd_id, ok=ok, message=message, canary=canary)
