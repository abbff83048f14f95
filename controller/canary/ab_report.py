"""A/B report of a canary (or any two-way split): is the canary as good as the stable?

Per variant, from the access log's per-request statistics (`controller.canary.stats_sink`):
- requests as clients got them, by status class (2xx, 3xx, 4xx, 429 apart: rate limited,
  5xx), and the success rate (non-5xx share) with a Wilson score interval (honest at
  small counts and near 0 or 100 %, where the normal approximation is not);
- request duration and time to first token (first byte of the answer's body: a streamed
  answer's first chunk), p50 and p95, exact from every sample;
- tokens from the engines' `usage` (or the stream estimate, `translate.usage`): prompt and
  completion tokens per request, and completion tokens per second of request time
  (Σ completion tokens / Σ duration: what a client sees, prefill included).

Between the variants: the difference of success rates and the sequential test of
`controller.canary.ab_test` (always-valid p-value: fed one interval at a time by the runner, so
looking at it at every interval costs no false alarms). The verdict says which way a
significant difference goes.

The canary's *rollout* verdict (`controller.canary.decisions.decide`) is SPEC 3.4's: the canary's
success rate per upstream attempt against `threshold`. The report is the comparison with
the stable, for the user (status, `modelroute rollout status`, the experiment page).

Output: a frozen report, with `to_json` for the status and `render` for the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.canary.ab_test import SequentialTest
from controller.canary.stats_sink import VariantWindow

CLASSES = ("2xx", "3xx", "4xx", "429", "5xx")


@dataclass(frozen=True, slots=True)
class VariantReport:
    name: str  # destination, "ns/name"
    role: str  # stable | canary
    requests: int
    successes: int
    statuses: tuple[tuple[str, int], ...]  # CLASSES → count
    success_rate: float | None  # percent
    ci_low: float | None  # percent
    ci_high: float | None
    p50_ms: float | None  # request duration
    p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    prompt_tokens: float | None  # per request
    completion_tokens: float | None  # per request
    tokens_per_s: float | None  # completion tokens per second of request time


@dataclass(frozen=True, slots=True)
class ABReport:
    stable: VariantReport
    canary: VariantReport
    difference: float | None  # canary - stable success rate, percentage points
    test: SequentialTest
    confidence: float

    @property
    def p_value(self) -> float | None:
        return self.test.p_value if self.test.looks else None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value <= 1 - self.confidence

    @property
    def verdict(self) -> str:
        if self.p_value is None or self.difference is None:
            return "not testable yet"
        if not self.significant:
            return "no significant difference yet"
        return "canary worse" if self.difference < 0 else "canary better"

    def to_json(self) -> dict[str, Any]:
        def variant(v: VariantReport) -> dict[str, Any]:
            return {"name": v.name, "role": v.role, "requests": v.requests, "statuses": dict(v.statuses),
                    "successRate": _round(v.success_rate), "successRateCI": [_round(v.ci_low), _round(v.ci_high)],
                    "p50Ms": _round(v.p50_ms), "p95Ms": _round(v.p95_ms), "ttftP50Ms": _round(v.ttft_p50_ms),
                    "ttftP95Ms": _round(v.ttft_p95_ms), "promptTokens": _round(v.prompt_tokens),
                    "completionTokens": _round(v.completion_tokens), "tokensPerSecond": _round(v.tokens_per_s)}
        return {"variants": [variant(self.stable), variant(self.canary)], "difference": _round(self.difference),
                "test": "sequential", "pValue": _round(self.p_value, 4), "eValue": _round(self.test.e_value, 3),
                "looks": self.test.looks, "significant": self.significant, "verdict": self.verdict,
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


def _percentiles(values: tuple[float, ...]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
    return float(p50), float(p95)


def _mean(values: tuple[float, ...]) -> float | None:
    return float(np.mean(values)) if values else None


def counts(window: VariantWindow) -> tuple[int, int]:
    """(failures, requests) of a window: 5xx answers among the requests clients got."""
    classes = window.status_classes()
    return classes["5xx"], window.completed


def _variant(window: VariantWindow, name: str, role: str, confidence: float) -> VariantReport:
    classes = window.status_classes()
    failures, n = counts(window)
    successes = n - failures
    ci = wilson_interval(successes, n, confidence=confidence)
    p50, p95 = _percentiles(window.values("duration"))
    ttft50, ttft95 = _percentiles(window.values("ttft"))
    completion = window.values("completion_tokens")
    durations = window.values("duration")
    seconds = sum(durations) / 1000
    return VariantReport(name=name, role=role, requests=n, successes=successes,
                         statuses=tuple((k, classes[k]) for k in CLASSES),
                         success_rate=None if n == 0 else 100.0 * successes / n,
                         ci_low=None if ci is None else 100 * ci[0], ci_high=None if ci is None else 100 * ci[1],
                         p50_ms=p50, p95_ms=p95, ttft_p50_ms=ttft50, ttft_p95_ms=ttft95,
                         prompt_tokens=_mean(window.values("prompt_tokens")), completion_tokens=_mean(completion),
                         tokens_per_s=sum(completion) / seconds if completion and seconds > 0 else None)


def build_report(stable: VariantWindow, canary: VariantWindow, *, test: SequentialTest | None = None,
                 names: tuple[str, str] | None = None, confidence: float = 0.95) -> ABReport:
    """The report on the rollout so far (`stable`/`canary`: its windows); `test` is the
    sequential test the runner has fed interval by interval."""
    stable_name, canary_name = names or (stable.cluster, canary.cluster)
    a = _variant(stable, stable_name, "stable", confidence)
    b = _variant(canary, canary_name, "canary", confidence)
    difference = None if a.success_rate is None or b.success_rate is None else b.success_rate - a.success_rate
    return ABReport(stable=a, canary=b, difference=difference, test=test or SequentialTest(alpha=1 - confidence),
                    confidence=confidence)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:g}ms"


def render(report: dict[str, Any]) -> list[str]:
    """Text lines for a report as stored in the status (`ABReport.to_json`)."""
    lines = [f"{'VARIANT':<8} {'DESTINATION':<28} {'REQUESTS':>8} {'SUCCESS':>8} {'CI':<17} {'P50':>8} {'P95':>8} "
             f"{'TTFT50':>8} {'TOK/REQ':>7} {'TOK/S':>7}  STATUSES"]
    for v in report["variants"]:
        rate = "-" if v["successRate"] is None else f"{v['successRate']:.1f}%"
        low, high = v["successRateCI"]
        ci = "-" if low is None else f"[{low:.1f}, {high:.1f}]%"
        tokens = "-" if v.get("completionTokens") is None else f"{v['completionTokens']:g}"
        speed = "-" if v.get("tokensPerSecond") is None else f"{v['tokensPerSecond']:.1f}"
        statuses = " ".join(f"{k}={n}" for k, n in (v.get("statuses") or {}).items() if n)
        lines.append(f"{v['role']:<8} {v['name']:<28} {v['requests']:>8} {rate:>8} {ci:<17} {_ms(v['p50Ms']):>8} "
                     f"{_ms(v['p95Ms']):>8} {_ms(v.get('ttftP50Ms')):>8} {tokens:>7} {speed:>7}  {statuses}".rstrip())
    if report.get("pValue") is None or report.get("difference") is None:
        lines.append("difference: not testable yet (no requests in a variant)")
    else:
        lines.append(f"difference {report['difference']:+.2f} pp, sequential test p={report['pValue']:.4f} "
                     f"(always valid, {report.get('looks', 0)} looks): {report.get('verdict', '')} "
                     f"at {100 * report['confidence']:g}%")
    return lines
