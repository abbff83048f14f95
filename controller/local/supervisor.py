"""Keeping a child process running (the gateway Envoy, redis-server), as a process
manager would: start it, notice at once when it exits (whatever killed it), start it
again after a backoff, and say at every moment what state it is in, so the status view
can tell the user that what the child serves is down.

Before it: the wiring, which knows how to make the child (`factory`). After it:
`on_change` (the wiring republishes the status) and `state()` for the status view.
Replicas have their own loop (`controller.local.replicas`): a replica also gets a new port and
a readiness probe on every start; they share `kit.backoff.RestartBackoff`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from kit.backoff import RestartBackoff
from kit.tasks import cancel_and_wait, spawn

log = logging.getLogger(__name__)

State = Literal["starting", "running", "restarting", "stopped"]


class Child(Protocol):
    """A process the supervisor can run (`EnvoyProcess`, `LocalRedis`)."""

    @property
    def pid(self) -> int | None: ...

    async def start(self) -> None:
        """Start it; return once it serves, raise if it cannot."""

    async def wait(self) -> int:
        """Until it exits; its exit code."""

    async def stop(self) -> object:
        """Stop it by PID (SIGTERM, grace, SIGKILL); a no-op when it is not running."""


@dataclass(frozen=True, slots=True)
class ChildState:
    name: str
    state: State
    pid: int | None
    restarts: int
    last_exit: int | None  # exit code of the last run (negative: killed by that signal)
    message: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


class Supervisor:
    """`await start()` (raises if the first start fails: a child that never ran is a
    configuration problem to report, not to retry forever), then restarts it whenever it
    exits until `await stop()`."""

    def __init__(self, name: str, factory: Callable[[], Child], *, on_change: Callable[[], object] = lambda: None,
                 backoff_factory: Callable[[], RestartBackoff] = RestartBackoff) -> None:
        self.name = name
        self._factory = factory
        self._on_change = on_change
        self._backoff = backoff_factory()
        self.child: Child | None = None
        self._state: State = "stopped"
        self._restarts = 0
        self._last_exit: int | None = None
        self._message = ""
        self._task: asyncio.Task[None] | None = None

    def state(self) -> ChildState:
        pid = self.child.pid if self.child is not None and self._state == "running" else None
        return ChildState(self.name, self._state, pid, self._restarts, self._last_exit, self._message)

    async def start(self) -> None:
        self._set("starting", "")
        self.child = child = self._factory()  # known before it starts: stop() must find it
        try:
            await child.start()
        except BaseException:
            await child.stop()
            self._set("stopped", "")
            raise
        self._set("running", "")
        self._task = spawn(self._supervise(child), name=f"supervisor {self.name}")

    async def _supervise(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            code = await child.wait()
            self._last_exit = code
            delay = self._backoff.next_delay(loop.time() - started)
            self._set("restarting", f"exited with code {code}; restarting in {delay:.1f}s")
            log.warning("child exited, restarting: child=%s pid=%s code=%s restart_in=%.2fs", self.name, child.pid,
                        code, delay, extra={"child": self.name, "exit_code": code})
            while True:
                await asyncio.sleep(delay)
                self._restarts += 1
                self.child = child = self._factory()
                started = loop.time()
                try:
                    await child.start()
                except Exception as err:  # noqa: BLE001 - retried like a crash, never a dead supervisor
                    await child.stop()
                    delay = self._backoff.next_delay(0.0)
                    self._set("restarting", f"could not start ({err}); retrying in {delay:.1f}s")
                    log.error("child could not restart: child=%s error=%s retry_in=%.2fs", self.name, err, delay,
                              extra={"child": self.name})
                    continue
                break
            self._set("running", "")
            log.info("child restarted: child=%s pid=%s restarts=%d", self.name, child.pid, self._restarts,
                     extra={"child": self.name, "pid": child.pid})

    async def stop(self) -> None:
        """Stop supervising, then the child. Not reported through `on_change`: what
        stops us is shutting down, and must not be called back into."""
        await cancel_and_wait(self._task)
        self._task = None
        if self.child is not None:
            await self.child.stop()
        self._state, self._message = "stopped", ""

    def _set(self, state: State, message: str) -> None:
        self._state, self._message = state, message
        try:
            self._on_change()
        except Exception:
            log.exception("supervisor change callback failed: child=%s", self.name)
