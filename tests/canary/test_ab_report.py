"""The A/B report: Wilson intervals, two-proportion test, latency percentiles."""

from __future__ import annotations

import pytest

from controller.ab_report import build_report, render, two_proportion_test, wilson_interval
from controller.stats_sink import VariantWindow


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(81, 263)  # a textbook example: 0.2553 .. 0.3662
    assert low == pytest.approx(0.2553, abs=1e-3) and high == pytest.approx(0.3662, abs=1e-3)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.69 < low < 0.73  # stays inside [0, 1] at the edge
    assert wilson_interval(0, 0) is None


def test_two_proportion_test() -> None:
    z, p = two_proportion_test(950, 1000, 700, 1000)  # type: ignore[misc]
    assert z < -10 and p < 1e-9
    z, p = two_proportion_test(95, 100, 94, 100)  # type: ignore[misc]
    assert abs(z) < 1 and p > 0.5
    assert two_proportion_test(10, 10, 5, 5) == (0.0, 1.0)  # both perfect: no difference
    assert two_proportion_test(1, 1, 0, 0) is None


def test_report_per_variant_and_significance() -> None:
    stable = VariantWindow("modelserver/d/s", (("2xx", 990), ("5xx", 10)), tuple(float(i) for i in range(1, 101)))
    canary = VariantWindow("modelserver/d/c", (("2xx", 140), ("4xx", 10), ("5xx", 50)), (5.0,) * 10)
    report = build_report(stable, canary, names=("d/s", "d/c"))
    assert (report.stable.requests, report.stable.success_rate) == (1000, 99.0)
    assert (report.canary.requests, report.canary.success_rate) == (200, 75.0)  # 4xx is a success
    assert report.stable.p50_ms == pytest.approx(50.5) and report.stable.p95_ms == pytest.approx(95.05)
    assert report.canary.ci_low < 75.0 < report.canary.ci_high
    assert report.significant and report.difference == pytest.approx(-24.0)
    doc = report.to_json()
    assert doc["variants"][1]["name"] == "d/c" and doc["significant"] is True
    text = "\n".join(render(doc))
    assert "canary" in text and "significant at 95%" in text and "75.0%" in text


def test_report_without_canary_traffic_is_not_significant() -> None:
    report = build_report(VariantWindow("s", (("2xx", 5),)), VariantWindow("c"))
    assert report.canary.success_rate is None and report.canary.p50_ms is None
    assert not report.significant and report.p_value is None
    assert "not testable yet" in "\n".join(render(report.to_json()))
