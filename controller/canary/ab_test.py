"""Is the canary's error rate different from the stable's? A sequential test whose
p-value stays valid however often it is looked at (always-valid inference).

Why not re-test the cumulative counts at every interval with a z-test: every look is
another chance of a false alarm, and peeking 20 times at two identical variants declares
a difference about a quarter of the time at a nominal 5 % (tests/canary/
test_sequential_test.py measures both). Here:

- Each look adds the interval's counts `(failures, requests)` of both variants (errors =
  5xx answers). Conditional on the interval's total failures and on how its requests
  were split, the canary's failures follow Fisher's (noncentral) hypergeometric law with
  odds ratio ψ (canary vs stable odds of failing); under "no difference" ψ = 1 whatever
  the error rate is, and however it and the split drift from one interval to the next.
  So the product over intervals of the likelihood ratio ψ-vs-1 is a test martingale
  under the null, exactly (no normal approximation: sound with 3 errors as with 3,000).
- A mixture over a grid of odds ratios (1/8 … 8, both directions, equal weights) makes
  the e-value `E`; by Ville's inequality P(E ever ≥ 1/α) ≤ α under the null, so the
  always-valid p-value `min(1, 1 / max E so far)` may be read at every interval and the
  rollout stopped on it. A difference is declared when p ≤ α (default 5 %).

Pure functions of the state and the counts: the runner keeps one `SequentialTest` per
rollout and feeds it the counts of each interval (back-to-back windows, never twice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

# Odds ratios (canary vs stable) the mixture puts equal weight on: both directions, from a
# 33 % change in the odds of failing to a factor of 8.
ODDS_RATIOS = (1 / 8, 1 / 4, 1 / 2, 2 / 3, 3 / 2, 2.0, 4.0, 8.0)
_LOG_PSI = np.log(np.asarray(ODDS_RATIOS))
_LOG_WEIGHT = math.log(1 / len(ODDS_RATIOS))
ALPHA = 0.05


def _log_choose(n: int, k: np.ndarray) -> np.ndarray:
    return np.asarray([math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) for x in k.tolist()])


def _log_sum_exp(values: np.ndarray, axis: int = -1) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    total: np.ndarray = np.squeeze(top, axis=axis) + np.log(np.exp(values - top).sum(axis=axis))
    return total


def log_likelihood_ratios(stable_failures: int, stable_requests: int, canary_failures: int,
                          canary_requests: int) -> np.ndarray:
    """log P_ψ(canary failures | totals) − log P_1(...) for every ψ of ODDS_RATIOS; zeros
    when the interval says nothing (no failure, a variant without requests, one outcome)."""
    failures = stable_failures + canary_failures
    low, high = max(0, failures - stable_requests), min(failures, canary_requests)
    if failures == 0 or stable_requests == 0 or canary_requests == 0 or low >= high:
        return np.zeros(len(ODDS_RATIOS))
    support = np.arange(low, high + 1)
    central = _log_choose(canary_requests, support) + _log_choose(stable_requests, failures - support)
    tilted = central[None, :] + _LOG_PSI[:, None] * support[None, :]
    ratios: np.ndarray = _LOG_PSI * canary_failures - _log_sum_exp(tilted) + float(_log_sum_exp(central))
    return ratios


@dataclass(frozen=True, slots=True)
class SequentialTest:
    """The running test of one experiment."""

    log_lr: tuple[float, ...] = (0.0,) * len(ODDS_RATIOS)  # per ODDS_RATIOS entry, summed over looks
    max_log_e: float = 0.0  # the largest log e-value seen (E starts at 1)
    looks: int = 0
    alpha: float = ALPHA

    def update(self, stable_failures: int, stable_requests: int, canary_failures: int,
               canary_requests: int) -> SequentialTest:
        """The test after one more look (the counts of the look's interval only)."""
        if min(stable_failures, stable_requests, canary_failures, canary_requests) < 0:
            raise ValueError("counts must be >= 0")
        added = log_likelihood_ratios(stable_failures, stable_requests, canary_failures, canary_requests)
        log_lr = np.asarray(self.log_lr) + added
        log_e = float(_log_sum_exp(log_lr + _LOG_WEIGHT))
        return replace(self, log_lr=tuple(float(x) for x in log_lr), max_log_e=max(self.max_log_e, log_e),
                       looks=self.looks + 1)

    @property
    def e_value(self) -> float:
        return float(math.exp(_log_sum_exp(np.asarray(self.log_lr) + _LOG_WEIGHT)))

    @property
    def p_value(self) -> float:
        """Always valid: min(1, 1 / the largest e-value so far)."""
        return min(1.0, math.exp(-self.max_log_e))

    @property
    def significant(self) -> bool:
        return self.p_value <= self.alpha
