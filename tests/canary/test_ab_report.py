"""The A/B report: Wilson intervals, per-request status classes, latency, time to first
token and token percentiles, and the sequential test's verdict."""

from __future__ import annotations

import pytest

from controller.canary.ab_report import build_report, counts, render, wilson_interval
from controller.canary.ab_test import SequentialTest
from controller.canary.stats_sink import VariantWindow


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(81, 263)  # a textbook example: 0.2553 .. 0.3662
    assert low == pytest.approx(0.2553, abs=1e-3) and high == pytest.approx(0.3662, abs=1e-3)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.69 < low < 0.73  # stays inside [0, 1] at the edge
    assert wilson_interval(0, 0) is None


def _window(name: str, codes: dict[int, int], **samples: tuple[float, ...]) -> VariantWindow:
    return VariantWindow(name, codes=tuple(sorted(codes.items())), samples=tuple(sorted(samples.items())))


def test_report_per_variant_and_the_sequential_verdict() -> None:
    stable = _window("modelserver/d/s", {200: 990, 503: 10}, duration=tuple(float(i) for i in range(1, 101)),
                     ttft=(10.0,) * 4, completion_tokens=(16.0, 32.0), prompt_tokens=(3.0, 5.0))
    canary = _window("modelserver/d/c", {200: 130, 404: 10, 429: 10, 500: 50}, duration=(500.0,) * 10)
    test = SequentialTest().update(*counts(stable), *counts(canary))
    report = build_report(stable, canary, test=test, names=("d/s", "d/c"))
    assert (report.stable.requests, report.stable.success_rate) == (1000, 99.0)
    assert (report.canary.requests, report.canary.success_rate) == (200, 75.0)  # 4xx and 429 are successes
    assert dict(report.canary.statuses) == {"2xx": 130, "3xx": 0, "4xx": 10, "429": 10, "5xx": 50}
    assert report.stable.p50_ms == pytest.approx(50.5) and report.stable.p95_ms == pytest.approx(95.05)
    assert report.stable.ttft_p50_ms == 10.0 and report.canary.ttft_p50_ms is None
    assert (report.stable.completion_tokens, report.stable.prompt_tokens) == (24.0, 4.0)
    assert report.stable.tokens_per_s == pytest.approx(48 / 5.05)  # 48 tokens over 5.05 s of requests
    assert report.canary.ci_low < 75.0 < report.canary.ci_high
    assert report.significant and report.verdict == "canary worse" and report.difference == pytest.approx(-24.0)
    doc = report.to_json()
    assert doc["variants"][1]["name"] == "d/c" and doc["significant"] is True and doc["looks"] == 1
    assert doc["variants"][1]["statuses"]["429"] == 10
    text = "\n".join(render(doc))
    assert "canary worse at 95%" in text and "75.0%" in text and "429=10" in text and "always valid" in text


def test_report_without_canary_traffic_is_not_testable() -> None:
    report = build_report(_window("s", {200: 5}), VariantWindow("c"))
    assert report.canary.success_rate is None and report.canary.p50_ms is None
    assert not report.significant and report.p_value is None and report.verdict == "not testable yet"
    assert "not testable yet" in "\n".join(render(report.to_json()))
