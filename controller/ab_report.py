"""A/B report of a canary (or any two-way split): is the canary as good as the stable?

Per variant: request count, success rate (non-5xx share) with a Wilson score interval
(honest at small counts and at rates near 0 or 100 %, where the normal approximation
is not), and p50/p95 latency from Envoy's per-request `upstream_rq_time` samples.
Between the variants: a two-proportion z-test (pooled) on the success rates; the
difference is `significant` when its two-sided p-value is below `alpha`.

Input: `controller.stats_sink.VariantWindow`s over the rollout so far. Output: a frozen
report, with `to_json` for the status file and `render` for the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.stats_sink import VariantWindow


@dataclass(frozen=True, slots=True)
class VariantReport:
    name: str  # destination, "ns/name"
    role: str  # stable | canary
    requests: int
    successes: int
    success_rate: float | None  # percent
    ci_low: float | None  # percent
    ci_high: float | None
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class ABReport:
    stable: VariantReport
    canary: VariantReport
    difference: float | None  # canary - stable success rate, percentage points
    z: float | None
    p_value: float | None
    significant: bool
    confidence: float

    def to_json(self) -> dict[str, Any]:
        def variant(v: VariantReport) -> dict[str, Any]:
            return {"name": v.name, "role": v.role, "requests": v.requests, "successRate": _round(v.success_rate),
                    "successRateCI": [_round(v.ci_low), _round(v.ci_high)], "p50Ms": _round(v.p50_ms),
                    "p95Ms": _round(v.p95_ms)}
        return {"variants": [variant(self.stable), variant(self.canary)], "difference": _round(self.difference),
                "z": _round(self.z, 3), "pValue": _round(self.p_value, 4), "significant": self.significant,
                "confidence": self.confidence}


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(float(x), digits)


def _z_for(confidence: float) -> float:
    """Two-sided normal quantile, by bisection on erf (no scipy)."""
    lo, hi = 0.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if math.erf(mid / math.sqrt(2)) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion, as fractions in [0, 1]; None when n = 0."""
    if n <= 0:
        return None
    z = _z_for(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_test(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float] | None:
    """Pooled two-proportion z-test: (z, two-sided p); None without data in both groups.
    A pooled rate of 0 or 1 means both rates are equal: z = 0, p = 1."""
    if n1 <= 0 or n2 <= 0:
        return None
    counts = np.array([s1, s2], dtype=float)
    sizes = np.array([n1, n2], dtype=float)
    pooled = counts.sum() / sizes.sum()
    variance = pooled * (1 - pooled) * (1 / sizes).sum()
    if variance <= 0:
        return 0.0, 1.0
    rates = counts / sizes
    z = float((rates[1] - rates[0]) / math.sqrt(variance))
    return z, math.erfc(abs(z) / math.sqrt(2))


def _variant(window: VariantWindow, name: str, role: str, confidence: float) -> VariantReport:
    n = window.requests
    successes = n - window.errors
    ci = wilson_interval(successes, n, confidence=confidence)
    latencies = np.asarray(window.latencies_ms, dtype=float)
    p50, p95 = (np.percentile(latencies, [50, 95]) if latencies.size else (None, None))
    return VariantReport(name=name, role=role, requests=n, successes=successes,
                         success_rate=None if n == 0 else 100.0 * successes / n,
                         ci_low=None if ci is None else 100 * ci[0], ci_high=None if ci is None else 100 * ci[1],
                         p50_ms=None if p50 is None else float(p50), p95_ms=None if p95 is None else float(p95))


def build_report(stable: VariantWindow, canary: VariantWindow, *, names: tuple[str, str] | None = None,
                 confidence: float = 0.95) -> ABReport:
    stable_name, canary_name = names or (stable.cluster, canary.cluster)
    a = _variant(stable, stable_name, "stable", confidence)
    b = _variant(canary, canary_name, "canary", confidence)
    test = two_proportion_test(a.successes, a.requests, b.successes, b.requests)
    difference = None if a.success_rate is None or b.success_rate is None else b.success_rate - a.success_rate
    z, p = test if test is not None else (None, None)
    return ABReport(stable=a, canary=b, difference=difference, z=z, p_value=p,
                    significant=p is not None and p < 1 - confidence, confidence=confidence)


def render(report: dict[str, Any]) -> list[str]:
    """Text lines for a report as stored in the status file (`ABReport.to_json`)."""
    lines = [f"{'VARIANT':<8} {'DESTINATION':<28} {'REQUESTS':>8} {'SUCCESS':>8} {'CI':<17} {'P50':>8} {'P95':>8}"]
    for v in report["variants"]:
        rate = "-" if v["successRate"] is None else f"{v['successRate']:.1f}%"
        low, high = v["successRateCI"]
        ci = "-" if low is None else f"[{low:.1f}, {high:.1f}]%"
        p50 = "-" if v["p50Ms"] is None else f"{v['p50Ms']:g}ms"
        p95 = "-" if v["p95Ms"] is None else f"{v['p95Ms']:g}ms"
        lines.append(f"{v['role']:<8} {v['name']:<28} {v['requests']:>8} {rate:>8} {ci:<17} {p50:>8} {p95:>8}")
    if report["pValue"] is None:
        lines.append("difference: not testable yet (no requests in a variant)")
    else:
        verdict = "significant" if report["significant"] else "not significant"
        lines.append(f"difference {report['difference']:+.2f} pp, z={report['z']:.2f}, p={report['pValue']:.4f}: "
                     f"{verdict} at {100 * report['confidence']:g}%")
    return lines
