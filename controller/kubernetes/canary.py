"""Canary rollouts in a cluster: the state lives in the ModelRoute's status, the user's
commands arrive as an annotation on it.

- **State** (`StatusStore`): what the runner persists is written by the leader through
  the status writer (`route_status`): `status.canary` (SPEC's stableWeight, canaryWeight,
  phase, lastSuccessRate, plus failedIntervals and message) and `status.rollout`
  (`state`: the whole `CanaryState`, so a new leader resumes exactly — destinations,
  failure count, start time; `command`: the last command's acknowledgement; `report`: the
  A/B report). A new leader (or a restarted control plane) reads them back from the
  informer cache, which holds each object's status; every replica applies the live
  weights of `status.canary`, so Envoys connected to a follower see the leader's split.
  `status.rollout` sits beside `status.canary` because the CRD declares `canary`'s fields
  (a real API server prunes unknown ones there) while `status` preserves unknown fields.
- **Commands** (`AnnotationCommands`): `modelroute rollout promote ROUTE --kubernetes`
  sets `rollout.matrixinfer.ai/command: promote@<nonce>` on the route (a merge patch on
  metadata: no status rights needed, RBAC is the user's right to patch the route). The
  leader's runner applies a command whose nonce is not yet acknowledged, then
  acknowledges it in `status.rollout.command` ({id: nonce, command, ok, message}), which
  the CLI waits for. The annotation stays (the controller never writes specs); the
  nonce makes it apply once, also across leader changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, fields
from types import MappingProxyType
from typing import Any

from controller.canary.decisions import CanaryState
from controller.canary.commands import RolloutCommand
from controller.kubernetes.interface import Obj
from routing_engine.api.resources import ModelRoute, ObjectKey

log = logging.getLogger(__name__)

COMMAND_ANNOTATION = "rollout.matrixinfer.ai/command"
_STATE_FIELDS = {f.name for f in fields(CanaryState)}

Routes = Callable[[], Iterable[Obj]]  # the ModelRoutes as the informer caches them (status included)


def _key(obj: Obj) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return ObjectKey(ModelRoute.KIND, str(meta.get("namespace") or "default"), str(meta.get("name")))


def _rollout(obj: Obj) -> Mapping[str, Any]:
    rollout = (obj.get("status") or {}).get("rollout")
    return rollout if isinstance(rollout, dict) else {}


def without_nulls(value: Any) -> Any:
    """JSON without null members: a merge patch treats null as "delete", and the status
    writer compares what it wants with what is stored, where absent fields are absent."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def parse_command(value: str) -> tuple[str, str]:
    """`promote@abc123` → ("promote", "abc123"); without a nonce the value is its own id."""
    command, sep, nonce = value.strip().partition("@")
    return command.strip(), (nonce.strip() if sep and nonce.strip() else value.strip())


class StatusStore:
    """The runner's state store in a cluster: loads from the cached statuses; saving is
    the leader's status write (see the module docstring), so `save` keeps nothing."""

    def __init__(self, routes: Routes) -> None:
        self._routes = routes

    def load(self) -> dict[ObjectKey, CanaryState]:
        states: dict[ObjectKey, CanaryState] = {}
        for obj in self._routes():
            try:
                state = stored_state(obj)
                if state is not None:
                    states[_key(obj)] = state
            except TypeError as err:
                log.error("canary state in status unreadable, the rollout starts over",
                          extra={"resource": str(_key(obj)), "error": str(err)})
        return states

    def save(self, states: Mapping[ObjectKey, CanaryState]) -> None:
        """Nothing to do: the state reaches the status with the next status write."""


def stored_state(obj: Obj) -> CanaryState | None:
    """The rollout state the leader wrote into a route's `status.rollout` (None: none);
    raises TypeError when it cannot be read."""
    raw = _rollout(obj).get("state")
    if not isinstance(raw, dict):
        return None
    return CanaryState(**{k: v for k, v in raw.items() if k in _STATE_FIELDS})


def live_weights(routes: Iterable[Obj]) -> dict[ObjectKey, tuple[int, int]]:
    """The split each route's `status.canary` says is live (what followers apply)."""
    out: dict[ObjectKey, tuple[int, int]] = {}
    for obj in routes:
        canary = (obj.get("status") or {}).get("canary")
        if isinstance(canary, dict) and isinstance(canary.get("stableWeight"), int) \
                and isinstance(canary.get("canaryWeight"), int):
            out[_key(obj)] = (canary["stableWeight"], canary["canaryWeight"])
    return out


class AnnotationCommands:
    """The runner's command queue in a cluster (see the module docstring)."""

    def __init__(self, routes: Routes, on_answer: Callable[[], None] = lambda: None,
                 version: Callable[[], object] | None = None) -> None:
        """`on_answer` is called after each acknowledgement (to get it written). `version`
        changes whenever a route does (the informer's resourceVersion): the runner polls
        ten times a second, and a cluster's 10,000 routes are read again only after one
        changed (or while a command claimed is not answered yet)."""
        self._routes = routes
        self._on_answer = on_answer
        self._version = version
        self._read_at: object = None  # the version the last complete read saw
        self.acks: dict[ObjectKey, dict[str, Any]] = {}  # newer than the cached status until written
        self._claimed: dict[str, tuple[ObjectKey, str]] = {}

    def _acked(self, obj: Obj) -> str | None:
        ack = self.acks.get(_key(obj)) or _rollout(obj).get("command") or {}
        return str(ack.get("id")) if isinstance(ack, dict) and ack.get("id") is not None else None

    def claim_all(self) -> Iterator[RolloutCommand | str]:
        version = self._version() if self._version is not None else None
        if version is not None and version == self._read_at and not self._claimed:
            return
        yield from self._claim(list(self._routes()))
        self._read_at = version

    def _claim(self, routes: list[Obj]) -> Iterator[RolloutCommand | str]:
        for obj in routes:
            value = ((obj.get("metadata") or {}).get("annotations") or {}).get(COMMAND_ANNOTATION)
            if not value:
                continue
            command, nonce = parse_command(str(value))
            if nonce == self._acked(obj):
                continue
            key = _key(obj)
            self._claimed[nonce] = (key, command)
            yield RolloutCommand(id=nonce, route=f"{key.namespace}/{key.name}", command=command)

    def answer(self, cmd_id: str, *, ok: bool, message: str, canary: dict[str, Any] | None = None) -> None:
        claimed = self._claimed.pop(cmd_id, None)
        if claimed is None:
            return
        key, command = claimed
        self.acks[key] = {"id": cmd_id, "command": command, "ok": ok, "message": message}
        log.info("rollout command acknowledged", extra={"resource": str(key), "command": command, "ok": ok})
        self._on_answer()


# `route_status` of a route with no rollout state, command or report (most of them): one
# shared, read-only value, so a publication compares it by identity.
NO_ROLLOUT: Mapping[str, Any] = MappingProxyType({"canary": None, "rollout": None})


def route_status(state: CanaryState | None, canary_view: Mapping[str, Any] | None,
                 ack: Mapping[str, Any] | None, report: Mapping[str, Any] | None) -> dict[str, Any]:
    """The status fields of one ModelRoute the canary owns (None removes a field)."""
    rollout = {"state": asdict(state) if state is not None else None, "command": ack, "report": report}
    return {"canary": without_nulls(dict(canary_view)) if canary_view is not None else None,
            "rollout": without_nulls(rollout) if any(v is not None for v in rollout.values()) else None}
