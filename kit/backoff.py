"""Waiting after failures: one exponential policy, and the restart variant a process
supervisor needs (a child that ran long enough starts from the first delay again)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delay after consecutive failures: initial, ×factor, capped."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0

    def delay(self, failures: int) -> float:
        return float(min(self.maximum, self.initial * self.factor ** max(0, failures - 1)))


@dataclass(slots=True)
class RestartBackoff:
    """Delay before restarting a crashed child: `policy` per crash in a row, and the
    count forgotten once the child has run `reset_after` seconds (a child that crashes
    once a day restarts at once)."""

    policy: Backoff = Backoff(initial=0.1, maximum=5.0)
    reset_after: float = 10.0
    _failures: int = field(default=0, repr=False)

    def next_delay(self, ran_for: float) -> float:
        self._failures = 1 if ran_for >= self.reset_after else self._failures + 1
        return self.policy.delay(self._failures)
