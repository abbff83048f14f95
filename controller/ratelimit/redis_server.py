"""A private `redis-server` for embedded mode (`modelroute up`): the shared rate limit's
counters, on a free loopback port, without persistence (limits are windows of at most a
day; a restart forgetting them is acceptable). Started and stopped by PID like Envoy,
dies with the control plane, and is kept running by a `controller.local.supervisor.Supervisor`
(a restart keeps its port, so the rate-limit service's URL stays valid).

Debian's `redis-server` is installed by scripts/bootstrap.sh. Without it, or with an
explicit `redis_url`, nothing is started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
from pathlib import Path

from controller.local.processes import child_preexec, terminate
from controller.ratelimit.service import DEFAULT_REDIS_URL, ServiceOptions

log = logging.getLogger("modelroute.ratelimit")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    def __init__(self, run_dir: Path, binary: str) -> None:
        self.run_dir = run_dir
        self.binary = binary
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start on a free port the first time, on the same port after that."""
        self.port = self.port or _free_port()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.run_dir / "redis.log"
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.run_dir), "--logfile", str(log_file),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True, preexec_fn=child_preexec())
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self._answers():
            if self.proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port} (see {log_file})")
            await asyncio.sleep(0.05)
        log.info("redis-server for the shared rate limit: pid=%s port=%s", self.proc.pid, self.port)

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 0.5)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            writer.write(b"PING\r\n")
            return (await asyncio.wait_for(reader.read(16), 0.5)).startswith(b"+PONG")
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()

    async def wait(self) -> int:
        """Until redis-server exits (for the supervisor); its exit code."""
        if self.proc is None:
            raise RuntimeError("redis-server is not started")
        return await self.proc.wait()

    async def stop(self, grace: float = 5.0) -> None:
        if self.proc is not None:
            await terminate(self.proc, grace=grace, label="redis-server")


def redis_for(options: ServiceOptions, run_dir: Path) -> tuple[ServiceOptions, LocalRedis | None]:
    """`options` with a Redis to use: the given `redis_url`, else a private redis-server
    to start (its port is chosen here, so the URL is known before it runs), else (not
    installed) the default URL, with a warning."""
    if options.redis_url is not None:
        return options, None
    binary = shutil.which("redis-server")
    if binary is None:
        log.warning("redis-server not found (scripts/bootstrap.sh installs it): shared rate limits use %s",
                    DEFAULT_REDIS_URL)
        return dataclasses.replace(options, redis_url=DEFAULT_REDIS_URL), None
    local = LocalRedis(run_dir, binary)
    local.port = _free_port()
    return dataclasses.replace(options, redis_url=local.url), local
