"""The supervisor keeps a real child process running: restart after any exit (SIGKILL
included) with backoff, state and restarts reported, a failed first start is an error,
a failed restart is retried, and stop() leaves nothing running."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable

import pytest

from controller.local.processes import child_preexec
from controller.local.processes import terminate
from controller.local.supervisor import Supervisor
from kit.backoff import Backoff, RestartBackoff


class Sleeper:
    """A child that sleeps until stopped; `fail_start` makes start() raise."""

    def __init__(self, fail_start: bool = False) -> None:
        self.fail_start = fail_start
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)",
                                                         preexec_fn=child_preexec())
        if self.fail_start:
            raise RuntimeError("not serving")

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None:
            await terminate(self.proc, grace=2, label="sleeper")


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_killed_child_is_restarted_and_its_state_reported() -> None:
    changes: list[str] = []
    supervisor = Supervisor("sleeper", Sleeper, backoff_factory=lambda: RestartBackoff(Backoff(initial=0.05)),
                            on_change=lambda: changes.append(supervisor.state().state))
    await supervisor.start()
    try:
        first = supervisor.state()
        assert first.running and first.pid is not None and first.restarts == 0
        os.kill(first.pid, signal.SIGKILL)
        await until(lambda: supervisor.state().restarts == 1 and supervisor.state().running, "the restart")
        second = supervisor.state()
        assert second.pid not in (None, first.pid) and second.last_exit == -signal.SIGKILL
        assert changes == ["starting", "running", "restarting", "running"]
    finally:
        await supervisor.stop()
    assert supervisor.state().state == "stopped" and not alive(second.pid)


async def test_a_failing_first_start_raises_and_leaves_nothing_running() -> None:
    made: list[Sleeper] = []

    def failing() -> Sleeper:
        made.append(Sleeper(fail_start=True))
        return made[-1]

    supervisor = Supervisor("broken", failing)
    with pytest.raises(RuntimeError, match="not serving"):
        await supervisor.start()
    assert supervisor.state().state == "stopped"
    assert made[0].pid is not None and not alive(made[0].pid)


async def test_a_failing_restart_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    attempts = 0

    def flaky() -> Sleeper:
        nonlocal attempts
        attempts += 1
        return Sleeper(fail_start=attempts in (2, 3))  # the first two restarts fail

    supervisor = Supervisor("flaky", flaky, backoff_factory=lambda: RestartBackoff(Backoff(initial=0.02, maximum=0.05)))
    await supervisor.start()
    try:
        pid = supervisor.state().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: supervisor.state().running and supervisor.state().restarts == 3, "the third restart")
        assert "child could not restart: child=flaky" in caplog.text
    finally:
        await supervisor.stop()


def test_backoff_doubles_caps_and_resets_after_a_long_run() -> None:
    b = RestartBackoff(Backoff(initial=0.1, maximum=0.5), reset_after=10)
    assert [b.next_delay(0.5) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert b.next_delay(30.0) == 0.1


async def test_redis_server_is_restarted_on_its_port(tmp_path) -> None:
    import shutil

    from controller.ratelimit.redis_server import LocalRedis

    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is installed by scripts/bootstrap.sh"
    redis = LocalRedis(tmp_path, binary)
    supervisor = Supervisor("redis", lambda: redis, backoff_factory=lambda: RestartBackoff(Backoff(initial=0.05)))
    await supervisor.start()
    try:
        port, pid = redis.port, supervisor.state().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: supervisor.state().running and supervisor.state().restarts == 1, "redis restarted")
        assert redis.port == port and supervisor.state().pid != pid
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\r\n")
        assert (await reader.readline()).startswith(b"+PONG")
        writer.close()
        await writer.wait_closed()
    finally:
        await supervisor.stop()
