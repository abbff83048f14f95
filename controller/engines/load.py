"""Engine metrics → load-aware endpoint weights (loadAware, issue 18). Pure: no I/O.

Envoy's least request already sees the requests in flight on each replica; what it does
not see is how fast each one works through them. A replica on a slower GPU finishes
each request later, and a request sent there sits in the tail. So loadAware gives each
endpoint an EDS weight (Envoy's least request divides it by the requests in flight)
from what the engines publish on their vLLM-style `/metrics`:

- **speed:** the least per-poll mean time per output token of the last SPEED_WINDOW_S
  (`vllm:time_per_output_token_seconds` or `vllm:inter_token_latency_seconds`, sum and
  count deltas). The mean of one poll grows with the engine's batch and KV use; the
  least of recent polls is the GPU at its lightest load, so equal replicas measure
  alike however the traffic happens to fall on them;
- **KV-cache use** (`vllm:kv_cache_usage_perc`, or `gpu_cache_usage_perc`) beyond
  KV_HIGH: new long prompts would wait for room or preempt others;
- **queue depth** (`vllm:num_requests_waiting` over `num_requests_running`): a new
  request waits about that share of a batch more.

weight = MAX_WEIGHT × (speed ÷ fastest) ^ EXPONENT × load factor, on the LEVELS. Speeds
within DEAD_BAND of the fastest count as fastest, and when every endpoint gets the same
weight there are no weights at all: replicas that work alike are picked exactly as by
plain least request, and noise never churns EDS. The steep exponent makes a replica at
half the best speed get 1/16 of the weight: Envoy's weighted least request is
proportional (a low-weight idle replica still gets its share), and measured, weights
proportional to capacity (1:3 for a replica at 0.35x) cut the p99 by 22% while 1:30 cut
it by 55% (docs/decisions.md, "Inference-aware routing"). The load factor falls from 1
to LOAD_FLOOR as KV use goes from KV_HIGH to full, and is divided by 1 + waiting ÷
running. An endpoint without a measurement yet gets the best weight (it must get
traffic to be measured).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

TPOT_METRICS = ("vllm:time_per_output_token_seconds", "vllm:inter_token_latency_seconds")
WAITING_METRIC = "vllm:num_requests_waiting"
RUNNING_METRIC = "vllm:num_requests_running"
KV_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")

SPEED_WINDOW_S = 20.0  # how long a speed measurement counts
MIN_TOKENS = 4  # tokens a poll must have seen to measure speed
KV_HIGH = 0.8  # KV-cache use above which the weight falls
LOAD_FLOOR = 0.25  # the load factor at a full KV cache (and least with a queue)
MAX_WEIGHT = 100
EXPONENT = 4
DEAD_BAND = 0.67  # replicas within 1.5x of the fastest count as fast


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → metric name → value, summed over label sets (a LoRA engine may
    report one series per model). Malformed lines are skipped."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line[: line.index("{")], line[line.rfind("}") + 1:]
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()
        if not name or not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        found[name] = found.get(name, 0.0) + value
    return found


def _first(metrics: Mapping[str, float], names: Iterable[str], suffix: str = "") -> float | None:
    for name in names:
        value = metrics.get(name + suffix)
        if value is not None:
            return value
    return None


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """One endpoint's state after a poll. `speed_samples`: (time, mean seconds per output
    token) of recent polls that saw tokens."""

    tpot_sum: float | None = None  # the counters of the last poll, for the next delta
    tpot_count: float | None = None
    speed_samples: tuple[tuple[float, float], ...] = ()
    waiting: float = 0.0
    running: float = 0.0
    kv: float = 0.0

    def updated(self, metrics: Mapping[str, float], now: float) -> EngineLoad:
        """The state after a poll at `now` (seconds, monotonic) that returned `metrics`."""
        total = _first(metrics, TPOT_METRICS, "_sum")
        count = _first(metrics, TPOT_METRICS, "_count")
        samples = [s for s in self.speed_samples if s[0] > now - SPEED_WINDOW_S]
        if total is not None and count is not None and self.tpot_sum is not None and self.tpot_count is not None:
            tokens = count - self.tpot_count
            if tokens >= MIN_TOKENS and total >= self.tpot_sum:
                samples.append((now, (total - self.tpot_sum) / tokens))
        return EngineLoad(total, count, tuple(samples), metrics.get(WAITING_METRIC, 0.0),
                          metrics.get(RUNNING_METRIC, 0.0), min(1.0, max(0.0, _first(metrics, KV_METRICS) or 0.0)))

    def tpot_s(self) -> float | None:
        """The replica's time per output token at its lightest recent load: the least
        per-poll mean of the window (the mean grows with the batch; the least is the GPU)."""
        return min((s[1] for s in self.speed_samples), default=None)

    def load_factor(self) -> float:
        """1, falling towards LOAD_FLOOR as the KV cache fills beyond KV_HIGH or requests wait."""
        headroom = min(1.0, max(0.0, (1 - self.kv) / (1 - KV_HIGH)))
        factor = LOAD_FLOOR + (1 - LOAD_FLOOR) * headroom
        if self.waiting > 0:
            factor /= 1 + self.waiting / max(1.0, self.running)
        return max(LOAD_FLOOR, factor)


LEVELS = (100, 50, 25, 12, 6, 3, 1)  # weights move between these only: no EDS push for small noise


def quantized(weight: float) -> int:
    """The level nearest to `weight` on a log scale."""
    return min(LEVELS, key=lambda level: abs(math.log(max(weight, 0.5) / level)))


def weights(loads: Mapping[K, EngineLoad]) -> dict[K, int] | None:
    """Endpoint → weight; None when every endpoint would get the same weight (plain least
    request, and no EDS weights at all)."""
    speeds = {key: load.tpot_s() for key, load in loads.items()}
    best = min((t for t in speeds.values() if t is not None and t > 0), default=None)
    found: dict[K, int] = {}
    for key, load in loads.items():
        tpot = speeds[key]
        ratio = 1.0 if best is None or tpot is None or tpot <= 0 else best / tpot
        speed = 1.0 if ratio >= DEAD_BAND else ratio ** EXPONENT
        found[key] = quantized(MAX_WEIGHT * speed * load.load_factor())
    if len(set(found.values())) <= 1:
        return None
    return found
