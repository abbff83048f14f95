"""The embedded status view: what `modelroute status` shows when there is no API server.

In Kubernetes the controller writes `status` into each object; in embedded mode there is
nowhere to write it, so the same content (phase, conditions, serviceEndpoint, replica
counts, the live splits of each route), plus the files the provider rejected and the
state of the child processes (Envoy, redis-server), goes to one JSON file in the run
directory: `DIR/.modelroute/status.json` (hidden, so the file provider never reads it
back).

`StatusFile.write(...)` is called by the wiring after every compile/ACK/replica change,
rejected file and child process change; it writes only when the content changed,
atomically (temp file + rename: a reader never sees half a file), and keeps each
condition's `lastTransitionTime` until its status flips, as Kubernetes does.
`read_status` / `render_status` are for the CLI.

Splits are given as data (`RouteView`), not recomputed here: the wiring derives them from
the engine's resolved groups, so the view shows what Envoy was told, never a second
interpretation of the spec.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, NotRequired, Protocol, TypedDict, cast

from kit.files import write_text_atomically
from routing_engine.api.resources import ObjectKey
from routing_engine.world import ObjectStatus

RUN_DIR = ".modelroute"  # in the served directory: status, canary state, logs, lock
STATUS_FILE = "status.json"
FORMAT_VERSION = 1
_EMPTY: Mapping[Any, Any] = MappingProxyType({})
# Conditions that are news when True; for all others False is the news.
_BAD_WHEN_TRUE = frozenset({"Degraded", "Shadowed", "Progressing"})


class StatusUnavailable(RuntimeError):
    """No status file, or one that cannot be read (is `modelroute up` running?)."""


class StatusDocument(TypedDict):
    version: int
    updatedAt: str
    objects: list[dict[str, Any]]
    routes: list[dict[str, Any]]
    errors: dict[str, list[str]]
    processes: NotRequired[list[dict[str, Any]]]  # embedded mode's children


@dataclass(frozen=True, slots=True)
class SplitView:
    destination: str  # "namespace/name" of the ModelServer
    weight: int  # as configured (live for a canary group)
    role: str | None = None  # "stable" | "canary" in a canary group


@dataclass(frozen=True, slots=True)
class GroupView:
    match: str  # human summary, e.g. "headers x-user=beta" or "*"
    splits: tuple[SplitView, ...]


@dataclass(frozen=True, slots=True)
class CanaryView:
    stable_weight: int
    canary_weight: int
    phase: str  # Progressing | Promoted | RolledBack | Paused
    last_success_rate: float | None = None
    failed_intervals: int = 0
    message: str = ""  # the last decision or command, with its numbers
    report: Mapping[str, Any] | None = None  # A/B report (`controller.canary.ab_report.ABReport.to_json`)


@dataclass(frozen=True, slots=True)
class RouteView:
    key: ObjectKey
    front_door: str | None
    groups: tuple[GroupView, ...]
    canary: CanaryView | None = None


class ReplicaCounts(Protocol):
    """What the view needs of a ModelInfer's replicas (`controller.local.replicas.ReplicaStatus`)."""

    @property
    def desired(self) -> int: ...

    @property
    def ready(self) -> int: ...

    @property
    def restarts(self) -> int: ...


class ProcessState(Protocol):
    """What the view shows of a child process (`controller.local.supervisor.ChildState`)."""

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def restarts(self) -> int: ...

    @property
    def message(self) -> str: ...


def run_dir(directory: Path) -> Path:
    """Where `modelroute up DIR` keeps its run files."""
    return Path(directory) / RUN_DIR


def status_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATUS_FILE


def _utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def percentages(weights: Sequence[int]) -> list[float]:
    """Normalized shares in percent, as Envoy's weighted clusters apply them."""
    total = sum(weights)
    return [round(100.0 * w / total, 1) if total else 0.0 for w in weights]


@dataclass
class StatusFile:
    path: Path
    now: Callable[[], str] = _utcnow
    _last: dict[str, str] | None = field(default=None, init=False)  # the JSON of each part last written
    _texts: dict[ObjectKey, tuple[ObjectStatus, ReplicaCounts | None, Mapping[str, Any], str]] = field(
        default_factory=dict, init=False)
    _route_texts: dict[ObjectKey, tuple[RouteView, str]] = field(default_factory=dict, init=False)
    _since: dict[tuple[str, str, str, str], tuple[str, str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        # Keep transition times across a restart of `modelroute up`.
        try:
            previous = read_status(self.path)
        except StatusUnavailable:
            return
        for obj in previous["objects"]:
            for c in obj.get("conditions", []):
                key = (obj["kind"], obj["namespace"], obj["name"], c["type"])
                self._since[key] = (c["status"], c.get("lastTransitionTime", ""))

    def write(self, *, statuses: Mapping[ObjectKey, ObjectStatus], routes: Iterable[RouteView] = (),
              replicas: Mapping[ObjectKey, ReplicaCounts] = _EMPTY,
              errors: Mapping[str, Sequence[str]] = _EMPTY,
              extras: Mapping[ObjectKey, Mapping[str, Any]] = _EMPTY,
              processes: Sequence[ProcessState] = ()) -> bool:
        """Write the view if it differs from the last one written; True when written.
        `extras` are more status fields per object (an AutoscalingPolicy's replica counts).

        Each object's and route's JSON is kept while its inputs are the same objects (the
        engine hands an unchanged object's status on as it is), so a publication at 10,000
        routes encodes what changed, not 30,000 documents (a second of CPU otherwise)."""
        now = self.now()
        texts: dict[ObjectKey, tuple[ObjectStatus, ReplicaCounts | None, Mapping[str, Any], str]] = {}
        for key in sorted(statuses):
            status, counts, extra = statuses[key], replicas.get(key), extras.get(key, _EMPTY)
            known = self._texts.get(key)
            if known is not None and known[0] is status and known[1] == counts and known[2] == extra:
                texts[key] = known
            else:
                texts[key] = (status, counts, extra, json.dumps(self._object(key, status, counts, extra, now)))
        self._texts = texts
        route_texts: dict[ObjectKey, tuple[RouteView, str]] = {}
        for view in sorted(routes, key=lambda r: r.key):
            seen = self._route_texts.get(view.key)
            route_texts[view.key] = seen if seen is not None and seen[0] is view else (view, json.dumps(route_json(view)))
        self._route_texts = route_texts
        parts = {
            "objects": "[" + ", ".join(t[3] for t in texts.values()) + "]",
            "routes": "[" + ", ".join(t[1] for t in route_texts.values()) + "]",
            "errors": json.dumps({f: list(msgs) for f, msgs in sorted(errors.items())}),
        }
        if processes:
            parts["processes"] = json.dumps([{"name": p.name, "state": p.state, "pid": p.pid, "restarts": p.restarts,
                                              **({"message": p.message} if p.message else {})} for p in processes])
        if parts == self._last:
            return False
        self._last = parts
        head = {"version": FORMAT_VERSION, "updatedAt": now}
        text = "{" + ", ".join([*(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in head.items()),
                                *(f"{json.dumps(k)}: {v}" for k, v in parts.items())]) + "}"
        write_text_atomically(self.path, text)
        return True

    def _object(self, key: ObjectKey, status: ObjectStatus, counts: ReplicaCounts | None,
                extra: Mapping[str, Any], now: str) -> dict[str, Any]:
        obj: dict[str, Any] = {"kind": key.kind, "namespace": key.namespace, "name": key.name}
        if status.phase:  # AutoscalingPolicy has no phase (SPEC 2)
            obj["phase"] = status.phase
        if status.service_endpoint is not None:
            obj["serviceEndpoint"] = status.service_endpoint
        if status.active_routes is not None:
            obj["activeRoutes"] = status.active_routes
        if counts is not None:
            obj.update(replicas=counts.desired, readyReplicas=counts.ready, restarts=counts.restarts)
        obj.update(extra)
        conditions = []
        for c in status.conditions:
            since_key = (key.kind, key.namespace, key.name, c.type)
            old = self._since.get(since_key)
            since = old[1] if old is not None and old[0] == c.status and old[1] else now
            self._since[since_key] = (c.status, since)
            conditions.append({"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
                               "lastTransitionTime": since})
        obj["conditions"] = conditions
        return obj


def route_json(view: RouteView) -> dict[str, Any]:
    """A route as the status document (and the experiment page) shows it."""
    groups = []
    for g in view.groups:
        shares = percentages([s.weight for s in g.splits])
        groups.append({"match": g.match, "splits": [
            {"destination": s.destination, "weight": s.weight, "percent": p, **({"role": s.role} if s.role else {})}
            for s, p in zip(g.splits, shares)]})
    out: dict[str, Any] = {"namespace": view.key.namespace, "name": view.key.name, "frontDoor": view.front_door,
                           "groups": groups}
    if view.canary is not None:
        c = view.canary
        out["canary"] = {"stableWeight": c.stable_weight, "canaryWeight": c.canary_weight, "phase": c.phase,
                         "lastSuccessRate": c.last_success_rate}
        if c.failed_intervals or c.message:
            out["canary"].update(failedIntervals=c.failed_intervals, message=c.message)
        if c.report is not None:
            out["canary"]["report"] = dict(c.report)
    return out


def read_status(path: Path) -> StatusDocument:
    """The status document at `path` (a status file or a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = status_path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise StatusUnavailable(f"no status at {path}: is `modelroute up` running for this directory?") from err
    except (OSError, ValueError) as err:
        raise StatusUnavailable(f"status file {path} cannot be read: {err}") from err
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise StatusUnavailable(f"status file {path} has an unknown format (expected version {FORMAT_VERSION})")
    return cast(StatusDocument, doc)  # its format version checked above


def render_status(doc: StatusDocument) -> str:
    """Plain-text tables for `modelroute status`."""
    return f"updated {doc['updatedAt']}\n\n" + render_tables(doc)


def render_tables(doc: StatusDocument, *, every_condition: bool = False) -> str:
    """The objects table (kind, name, phase, endpoint or replicas, and the conditions that
    are news; `every_condition`: all of them) and the routes table (live splits, canary
    state): `modelroute status` and `kubectl matrixinfer get` print the same."""
    lines = [f"{'KIND':<12} {'NAME':<32} {'PHASE':<9} DETAIL"]
    for o in doc["objects"]:
        detail = o.get("serviceEndpoint") or (
            f"{o['readyReplicas']}/{o['replicas']} ready" if "replicas" in o else
            f"{o['currentReplicas']} replicas, {o['desiredReplicas']} desired" if "desiredReplicas" in o else "")
        shown = [c for c in o["conditions"]
                 if every_condition or c["status"] == ("True" if c["type"] in _BAD_WHEN_TRUE else "False")]
        lines.append(f"{o['kind']:<12} {o['namespace'] + '/' + o['name']:<32} {o.get('phase', '?'):<9} {detail}")
        lines.extend(f"{'':<12} {'':<32} {'':<9} {_mark(c)} {c['type']}={c['status']} ({c['reason']}: {c['message']})"
                     for c in shown)
    if doc["routes"]:
        lines += ["", f"{'ROUTE':<32} {'MATCH':<28} SPLIT"]
        for r in doc["routes"]:
            for g in r["groups"]:
                split = ", ".join(f"{s['destination']} {s['percent']:g}%" + (f" ({s['role']})" if "role" in s else "")
                                  for s in g["splits"])
                lines.append(f"{r['namespace'] + '/' + r['name']:<32} {g['match']:<28} {split}")
            if r.get("canary"):
                c = r["canary"]
                rate = "" if c["lastSuccessRate"] is None else f", success {c['lastSuccessRate']:g}%"
                lines.append(f"{'':<32} canary {c['phase']}: {c['stableWeight']}/{c['canaryWeight']}{rate}")
                if c.get("message"):
                    lines.append(f"{'':<32} {c['message']}")
                if c.get("report"):
                    from controller.canary.ab_report import render as render_report  # numpy only when there is one
                    lines.extend(f"{'':<32} {line}" for line in render_report(c["report"]))
    if doc.get("processes"):
        lines += ["", f"{'PROCESS':<12} {'STATE':<11} {'PID':<8} {'RESTARTS':<9}"]
        for p in doc["processes"]:
            pid = "-" if p["pid"] is None else str(p["pid"])
            lines.append(f"{p['name']:<12} {p['state']:<11} {pid:<8} {p['restarts']:<9} {p.get('message', '')}".rstrip())
    for file, messages in doc["errors"].items():
        lines += ["", f"errors in {file}:"] + [f"  {m}" for m in messages]
    return "\n".join(lines) + "\n"


def _mark(condition: Mapping[str, Any]) -> str:
    """`!` for a condition that is news (a problem), `-` for one that is as it should be."""
    return "!" if condition["status"] == ("True" if condition["type"] in _BAD_WHEN_TRUE else "False") else "-"
