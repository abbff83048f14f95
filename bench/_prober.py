"""Edit → served probe, run as its own process (standard library only) so polling never
competes with the control plane for the GIL, pinned to the last CPU.

    python bench/_prober.py URL HEADER
Reads lines `MARKER TIMEOUT_S` on stdin; polls `POST URL` (body `{}`) over one keep-alive
connection until the response header HEADER equals MARKER, then prints the
`time.monotonic_ns()` at which that response arrived (CLOCK_MONOTONIC, comparable with
the parent's clock), or `timeout`. `quit` or EOF ends it.
"""

from __future__ import annotations

import http.client
import os
import sys
import time
from urllib.parse import urlsplit

POLL_PAUSE_S = 0.001


def pin_to_last_cpu() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[-1]})


def wait_for(host: str, port: int, path: str, header: str, marker: str, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        while time.monotonic() < deadline:
            try:
                conn.request("POST", path, body=b"{}", headers={"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                arrived = time.monotonic_ns()
                if response.getheader(header) == marker:
                    return arrived
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=5)
            time.sleep(POLL_PAUSE_S)
    finally:
        conn.close()
    return None


def main() -> None:
    url, header = sys.argv[1], sys.argv[2]
    parts = urlsplit(url)
    pin_to_last_cpu()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() in ("", "quit"):
            break
        marker, timeout = line.split()
        arrived = wait_for(parts.hostname or "127.0.0.1", parts.port or 80, parts.path, header, marker, float(timeout))
        print("timeout" if arrived is None else arrived, flush=True)


if __name__ == "__main__":
    main()
