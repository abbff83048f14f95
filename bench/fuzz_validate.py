"""Issue #12's property at scale: what `modelroute validate` accepts, the real Envoy accepts.

Draws batches of hostile manifest sets (tests/envoy_rules/hostile.py: regexes, globs,
JWKS URIs, PEMs, JWKS, durations, limits) with hypothesis, checks each batch as the CI
test does (tests/envoy_rules/check.py: a set fails validate with a field-path error, or
its compiled config passes `envoy --mode validate`), and reports how many sets went each
way and every disagreement. CI runs 15 batches of 20; this runs as many as asked.

    .venv/bin/python -m bench.fuzz_validate --batches 200 [--seed N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bench._common import REPO, machine, write_result

sys.path.insert(0, str(REPO))  # the strategies live with the tests

from tests.envoy_rules.check import check_batch  # noqa: E402
from tests.envoy_rules.hostile import manifest_set  # noqa: E402

BATCH = 20


def run(batches: int, seed_value: int) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    problems: list[str] = []

    @seed(seed_value)
    @settings(max_examples=batches, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.tuples(*(manifest_set(i) for i in range(BATCH))))
    def one(sets: Any) -> None:
        outcome = check_batch(sets)
        totals["batches"] += 1
        totals["sets"] += len(sets)
        totals["refused_by_validate"] += outcome.refused_by_validate
        totals["accepted_by_envoy"] += outcome.accepted_by_envoy
        totals["envoy_runs"] += outcome.envoy_runs
        problems.extend(outcome.problems)

    started = time.perf_counter()
    one()
    return {"seconds": round(time.perf_counter() - started, 1), **totals, "disagreements": len(problems),
            "problems": problems[:20]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help=f"batches of {BATCH} manifest sets (default 200)")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args(argv)
    result = run(args.batches, args.seed)
    print(f"{'sets':>8} {'refused by validate':>20} {'accepted by Envoy':>18} {'Envoy runs':>11} "
          f"{'disagreements':>14} {'seconds':>8}")
    print(f"{result['sets']:>8} {result['refused_by_validate']:>20} {result['accepted_by_envoy']:>18} "
          f"{result['envoy_runs']:>11} {result['disagreements']:>14} {result['seconds']:>8}")
    for problem in result["problems"]:
        print("\n" + problem)
    path = write_result("fuzz_validate", {"machine": machine(), "batch": BATCH, "seed": args.seed,
                                          "command": f"python -m bench.fuzz_validate --batches {args.batches} "
                                                     f"--seed {args.seed}", **result})
    print(f"\nresults: {path.relative_to(REPO)}")
    return 1 if result["disagreements"] else 0


if __name__ == "__main__":
    sys.exit(main())
