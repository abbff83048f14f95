"""The A/B test users can trust: peeking at every interval does not inflate false alarms.

The simulation runs the real path — statsd lines into `StatsCollector`, the runner's
rollout (weights stepping as it decides), its report refreshed at every interval with
the sequential test fed one interval at a time — with a fake clock, 200 experiments
each. Under no true difference the report may call a difference at any of its looks in
at most 5 % of them; a z-test on the cumulative counts at the same looks (what the
report did before) calls one far more often; a real regression is found.
"""

from __future__ import annotations

import math

import numpy as np
import yaml

from controller.canary.ab_test import SequentialTest, log_likelihood_ratios
from controller.canary.runner import CanaryRunner
from controller.canary.stats_sink import StatsCollector
from routing_engine.api.loader import load_text
from routing_engine.api.resources import ModelRoute, ObjectKey

KEY = ObjectKey("ModelRoute", "default", "chat")
EXPERIMENTS = 200
LOOKS = 20
PER_INTERVAL = 200  # requests to the route per interval (Poisson mean)


class _Memory:
    def load(self) -> dict:  # type: ignore[type-arg]
        return {}

    def save(self, states: object) -> None:
        return None


def _route() -> ModelRoute:
    doc = {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute", "metadata": {"name": "chat"},
           "spec": {"routes": [{"destination": {"modelServerRef": {"name": "v1"}}},
                               {"destination": {"modelServerRef": {"name": "v2"}}}],
                    "canary": {"enabled": True, "trafficSplit": {"stable": 95, "canary": 5},
                               "analysis": {"threshold": 0, "interval": "10s", "stepWeight": 5,
                                            "minRequests": 1}}}}
    (obj,), errors = load_text(yaml.safe_dump(doc), "test")
    assert not errors and isinstance(obj, ModelRoute)
    return obj


def _lines(cluster: str, ok: int, errors: int) -> list[str]:
    prefix = f"envoy.modelroute_variant.requests.cluster.modelserver/default/{cluster}.code"
    upstream = f"envoy.cluster.modelserver/default/{cluster}"
    return [f"{prefix}.200:{ok}|c", f"{prefix}.503:{errors}|c", f"{upstream}.upstream_rq_2xx:{ok}|c",
            f"{upstream}.upstream_rq_5xx:{errors}|c"]


def _z_test_p(f_a: int, n_a: int, f_b: int, n_b: int) -> float:
    if not n_a or not n_b:
        return 1.0
    pooled = (f_a + f_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0:
        return 1.0
    z = (f_b / n_b - f_a / n_a) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def _experiment(rng: np.random.Generator, stable_rate: float, canary_rate: float) -> tuple[str, bool]:
    """One rollout watched at every interval: (the report's verdict if it ever called a
    difference, else its last one; whether a z-test on the cumulative counts ever did)."""
    now = [1000.0]
    stats = StatsCollector(clock=lambda: now[0])
    runner = CanaryRunner(store=_Memory(), stats=stats, apply_weights=lambda w: None, clock=lambda: now[0])
    runner.set_routes([_route()])
    totals = np.zeros(4, dtype=int)  # stable failures, stable requests, canary failures, canary requests
    z_alarm = False
    verdict = ""
    for _ in range(LOOKS):
        share = runner.states[KEY].canary_weight / 100
        n = rng.poisson(PER_INTERVAL)
        n_canary = rng.binomial(n, share)
        n_stable = n - n_canary
        f_stable = n_stable - rng.binomial(n_stable, stable_rate)
        f_canary = n_canary - rng.binomial(n_canary, canary_rate)
        now[0] += 5.0
        stats.feed("\n".join(_lines("v1", n_stable - f_stable, f_stable) +
                             _lines("v2", n_canary - f_canary, f_canary)).encode())
        now[0] += 5.0
        runner.tick()
        totals += (f_stable, n_stable, f_canary, n_canary)
        z_alarm = z_alarm or _z_test_p(*(int(x) for x in totals)) <= 0.05
        report = runner.reports[KEY]
        if report["significant"]:
            return report["verdict"], z_alarm
        verdict = report["verdict"]
    assert runner.reports[KEY]["looks"] == LOOKS
    return verdict, z_alarm


def test_no_true_difference_false_alarms_stay_within_five_percent_despite_peeking() -> None:
    rng = np.random.default_rng(16)
    outcomes = [_experiment(rng, 0.95, 0.95) for _ in range(EXPERIMENTS)]
    false_alarms = sum(verdict.startswith("canary ") for verdict, _ in outcomes)
    naive = sum(z for _, z in outcomes)
    print(f"false alarms in {EXPERIMENTS} experiments of {LOOKS} looks: sequential {false_alarms}, "
          f"z-test on cumulative counts {naive}")
    assert false_alarms <= 0.05 * EXPERIMENTS
    assert naive > 2 * 0.05 * EXPERIMENTS  # what re-testing cumulative data at every look does


def test_a_real_regression_is_called_and_in_the_right_direction() -> None:
    rng = np.random.default_rng(17)
    verdicts = [_experiment(rng, 0.95, 0.80)[0] for _ in range(50)]
    assert verdicts.count("canary worse") >= 45 and "canary better" not in verdicts


def test_likelihood_ratios_are_zero_when_an_interval_says_nothing() -> None:
    assert not log_likelihood_ratios(0, 100, 0, 10).any()  # no failures
    assert not log_likelihood_ratios(5, 100, 0, 0).any()  # no canary requests
    assert not log_likelihood_ratios(100, 100, 10, 10).any()  # every request failed: the split decides all


def test_p_value_is_the_running_minimum() -> None:
    test = SequentialTest().update(0, 1000, 40, 100)  # canary far worse
    assert test.significant and test.p_value < 1e-6
    later = test.update(40, 1000, 0, 100)  # evidence the other way lowers E, not the record
    assert later.p_value == test.p_value and later.looks == 2
