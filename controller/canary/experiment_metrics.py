"""Prometheus series of the traffic per variant and of the rollouts, read at scrape time.

Per variant (one ModelServer, label `modelserver="<ns>/<name>"`), from what every
gateway Envoy pushes (`controller.canary.stats_sink`, summed since this control plane started):

- `modelroute_variant_requests_total{code}`: requests by the status clients got;
- `modelroute_variant_upstream_responses_total{code_class}`: upstream attempts by class
  (what SPEC 3.4's canary verdict counts);
- histograms `modelroute_variant_request_duration_seconds`,
  `modelroute_variant_time_to_first_token_seconds` (first byte of the answer's body),
  `modelroute_variant_prompt_tokens` and `modelroute_variant_completion_tokens` (per
  request; their `_sum` rates are tokens per second).

Per rollout (label `route="<ns>/<name>"`), from the canary runner (the leader's only, in
a cluster): `modelroute_canary_weight_percent{role,modelserver}`,
`modelroute_canary_phase{phase}` (1 for the current one), `modelroute_canary_failed_intervals`,
`modelroute_canary_insufficient_traffic` (1 while its last interval held for lack of
requests), `modelroute_canary_p_value` (the A/B report's always-valid p-value) and
`modelroute_canary_decisions_total{action}`.

Collectors rather than instruments updated on the hot path: the numbers already live in
the stats collector and the runner, and a scrape reads them once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.canary.runner import CanaryRunner
from controller.canary.stats_sink import Histogram, StatsCollector

_BACKEND = "modelserver/"
PHASES = ("Progressing", "Paused", "Promoted", "RolledBack")
# (sample, metric name, help, scale to the metric's unit)
_HISTOGRAMS = (
    ("duration", "modelroute_variant_request_duration_seconds", "Request duration per variant (ModelServer)", 1e-3),
    ("ttft", "modelroute_variant_time_to_first_token_seconds",
     "Time to the first byte of the answer's body (first token of a stream) per variant", 1e-3),
    ("prompt_tokens", "modelroute_variant_prompt_tokens", "Prompt tokens per request per variant (engine usage)", 1.0),
    ("completion_tokens", "modelroute_variant_completion_tokens",
     "Completion tokens per request per variant (engine usage, or one per streamed event)", 1.0),
)


def server_of(stat: str) -> str | None:
    """`modelserver/<ns>/<name>` in stat-name form (dots as "_") → "<ns>/<name>"; None for
    other clusters. Kubernetes names have no "_", so the "." come back exactly."""
    if not stat.startswith(_BACKEND):
        return None
    return stat[len(_BACKEND):].replace("_", ".")


def _buckets(h: Histogram, scale: float) -> list[tuple[str, float]]:
    running = 0
    out: list[tuple[str, float]] = []
    for bound, n in zip((*h.bounds, float("inf")), h.counts or [0] * (len(h.bounds) + 1)):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(round(bound * scale, 9)), running))
    return out


class VariantCollector(Collector):
    def __init__(self, stats: StatsCollector) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("modelroute_variant_requests", "Requests per variant (ModelServer) by the "
                                       "status the client got", labels=["modelserver", "code"])
        upstream = CounterMetricFamily("modelroute_variant_upstream_responses", "Upstream attempts per variant by "
                                       "status class (what the canary verdict counts)",
                                       labels=["modelserver", "code_class"])
        histograms = {sample: HistogramMetricFamily(name, doc, labels=["modelserver"])
                      for sample, name, doc, _ in _HISTOGRAMS}
        scales = {sample: scale for sample, _, _, scale in _HISTOGRAMS}
        for stat, numbers in sorted(self._stats.cumulative().items()):
            server = server_of(stat)
            if server is None:
                continue
            for code, n in sorted(numbers.codes.items()):
                requests.add_metric([server, str(code)], n)
            for klass, n in sorted(numbers.responses.items()):
                upstream.add_metric([server, klass], n)
            for sample, h in sorted(numbers.histograms.items()):
                histograms[sample].add_metric([server], _buckets(h, scales[sample]), h.total * scales[sample])
        yield requests
        yield upstream
        yield from histograms.values()


class CanaryCollector(Collector):
    """`runner` returns the runner judging rollouts here, or None (a follower)."""

    def __init__(self, runner: Callable[[], CanaryRunner | None]) -> None:
        self._runner = runner

    def collect(self) -> Iterator[Metric]:
        weight = GaugeMetricFamily("modelroute_canary_weight_percent", "Live traffic share of each variant of a "
                                   "rollout", labels=["route", "role", "modelserver"])
        phase = GaugeMetricFamily("modelroute_canary_phase", "1 for the rollout's current phase",
                                  labels=["route", "phase"])
        failed = GaugeMetricFamily("modelroute_canary_failed_intervals", "Failed intervals of the rollout so far",
                                   labels=["route"])
        starved = GaugeMetricFamily("modelroute_canary_insufficient_traffic", "1 while the rollout's last interval "
                                    "held for lack of requests", labels=["route"])
        p_value = GaugeMetricFamily("modelroute_canary_p_value", "Always-valid p-value of the A/B test (canary vs "
                                    "stable error rates)", labels=["route"])
        decisions = CounterMetricFamily("modelroute_canary_decisions", "Interval verdicts by action",
                                        labels=["route", "action"])
        runner = self._runner()
        if runner is not None:
            for key, state in sorted(runner.states.items()):
                route = f"{key.namespace}/{key.name}"
                weight.add_metric([route, "stable", state.stable], state.stable_weight)
                weight.add_metric([route, "canary", state.canary], state.canary_weight)
                for name in PHASES:
                    phase.add_metric([route, name], 1.0 if state.phase == name else 0.0)
                failed.add_metric([route], state.failures)
                starved.add_metric([route], 1.0 if key in runner.starved else 0.0)
                report = runner.reports.get(key) or {}
                if report.get("pValue") is not None:
                    p_value.add_metric([route], report["pValue"])
            for (key, action), n in sorted(runner.decisions.items()):
                decisions.add_metric([f"{key.namespace}/{key.name}", action], n)
        yield from (weight, phase, failed, starved, p_value, decisions)
