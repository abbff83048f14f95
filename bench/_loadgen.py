"""Closed-loop HTTP load generator, run as its own process (standard library only) and
pinned to the last CPU, so the client is never the thing measured.

    python bench/_loadgen.py URL COUNT WARMUP [HEADER]
Sends WARMUP then COUNT sequential `POST URL` (body `{}`) over one keep-alive
connection; prints one JSON object: latency percentiles in microseconds of the COUNT
timed requests, status counts, and (with HEADER) how many responses carried each value of
that header.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


def main() -> None:
    url, count, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    header = sys.argv[4] if len(sys.argv) > 4 else None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[-1]})
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    body, headers = b"{}", {"content-type": "application/json"}
    latencies: list[int] = []
    statuses: Counter[int] = Counter()
    values: Counter[str] = Counter()
    for i in range(warmup + count):
        started = time.perf_counter_ns()
        conn.request("POST", parts.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter_ns() - started
        if i < warmup:
            continue
        latencies.append(elapsed)
        statuses[response.status] += 1
        if header:
            values[response.getheader(header) or ""] += 1
    conn.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1000

    print(json.dumps({"count": count, "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
                      "max_us": latencies[-1] / 1000, "mean_us": sum(latencies) / len(latencies) / 1000,
                      "statuses": {str(k): v for k, v in statuses.items()}, "header_values": dict(values)}))


if __name__ == "__main__":
    main()
