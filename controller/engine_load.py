"""Engine metrics → load-aware endpoint weights (loadAware, issue 18). Pure: no I/O.

Envoy's least request already sees the requests in flight on each replica; what it does
not see is how fast each one works through them. A replica on a slower GPU (or one with
a full KV cache, or a waiting queue) finishes each request later, and a request sent
there sits in the tail. So loadAware gives each endpoint an EDS weight (Envoy's least
request divides it by the requests in flight) from what the engines publish on their
vLLM-style `/metrics`:

- **speed:** the mean time per output token over the last poll
  (`vllm:time_per_output_token_seconds` or `vllm:inter_token_latency_seconds`, sum and
  count deltas), smoothed (EWMA, `SMOOTHING`). It grows with the engine's batch and KV
  use, so it is already a measure of load as well as of the GPU;
- **queue depth:** `vllm:num_requests_waiting` over `num_requests_running`: a new request
  waits about that share of a batch more;
- **KV-cache use:** `vllm:kv_cache_usage_perc` (or `gpu_cache_usage_perc`) above
  `KV_HIGH` means new long prompts wait for room or preempt others: the score falls to
  `KV_FLOOR` at a full cache.

score = 1 / (tpot × (1 + waiting / running)) × kv headroom. Each endpoint's weight is
`MAX_WEIGHT × (score / best score) ^ EXPONENT`, at least 1; within `DEAD_BAND` of the best
it is `MAX_WEIGHT`, so replicas that work alike keep equal weights (Envoy then picks
exactly as plain least request, and noise never churns EDS). The steep exponent makes a
replica at half the best speed get 1/16 of the weight: Envoy's weighted least request is
proportional (a low-weight idle replica still gets its share), and the benchmark showed
that a capacity-proportional share still puts the slow replica's requests in the p99
(bench/README.md, "Inference-aware routing"). An endpoint without a measurement yet is
given the best weight (it must get traffic to be measured).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

TPOT_METRICS = ("vllm:time_per_output_token_seconds", "vllm:inter_token_latency_seconds")
WAITING_METRIC = "vllm:num_requests_waiting"
RUNNING_METRIC = "vllm:num_requests_running"
KV_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")

SMOOTHING = 0.5  # weight of the newest time-per-token sample in the moving average
KV_HIGH = 0.8  # KV-cache use above which the score falls
KV_FLOOR = 0.1  # the score's factor at a full KV cache
MAX_WEIGHT = 100
EXPONENT = 4
DEAD_BAND = 0.8  # scores within this ratio of the best share the best weight


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
    """One endpoint's state after a poll. `tpot_s` None: no token measured yet."""

    tpot_sum: float | None = None  # the counters of the last poll, for the next delta
    tpot_count: float | None = None
    tpot_s: float | None = None
    waiting: float = 0.0
    running: float = 0.0
    kv: float = 0.0

    def updated(self, metrics: Mapping[str, float]) -> EngineLoad:
        """The state after a poll that returned `metrics`."""
        total = _first(metrics, TPOT_METRICS, "_sum")
        count = _first(metrics, TPOT_METRICS, "_count")
        tpot = self.tpot_s
        if total is not None and count is not None and self.tpot_sum is not None and self.tpot_count is not None:
            tokens = count - self.tpot_count
            if tokens > 0 and total >= self.tpot_sum:
                sample = (total - self.tpot_sum) / tokens
                tpot = sample if tpot is None else SMOOTHING * sample + (1 - SMOOTHING) * tpot
        return EngineLoad(total, count, tpot, metrics.get(WAITING_METRIC, 0.0), metrics.get(RUNNING_METRIC, 0.0),
                          min(1.0, max(0.0, _first(metrics, KV_METRICS) or 0.0)))

    def score(self) -> float | None:
        """Higher is better: the inverse of the expected time per token a new request
        meets here; None without a measurement."""
        if self.tpot_s is None or self.tpot_s <= 0:
            return None
        queue = 1 + self.waiting / max(1.0, self.running)
        headroom = min(1.0, max(KV_FLOOR, (1 - self.kv) / (1 - KV_HIGH)))
        return headroom / (self.tpot_s * queue)


def weights(loads: Mapping[K, EngineLoad]) -> dict[K, int] | None:
    """Endpoint → weight; None when every endpoint would get the same weight (plain least
    request, and no EDS weights at all)."""
    scores = {key: load.score() for key, load in loads.items()}
    best = max((s for s in scores.values() if s is not None), default=None)
    if best is None:
        return None
    found: dict[K, int] = {}
    for key, score in scores.items():
        ratio = 1.0 if score is None else score / best
        found[key] = MAX_WEIGHT if ratio >= DEAD_BAND else max(1, round(MAX_WEIGHT * ratio ** EXPONENT))
    if all(w == MAX_WEIGHT for w in found.values()):
        return None
    return found
