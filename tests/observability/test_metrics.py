"""Embedded mode's `/metrics` holds every promised series once a world has run traffic,
and every PromQL query of the dashboards asks only for series and labels it holds.
(Kubernetes mode: tests/kubernetes/test_metrics.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from routing_engine.api.resources import ObjectKey
from routing_engine import plugins as plugin
from tests.e2e.harness import infer, running, server, write_manifests
from tests.observability.promql import missing, queries, references, scrape
from tests.observability.scraping import RefusedByEnvoy, canary_route, drive, scrape_until_complete
from tests.support import free_port


def test_the_promql_reader_finds_metrics_and_labels() -> None:
    refs = references('histogram_quantile(0.95, sum by (le, modelserver) (rate(modelroute_variant_request_duration'
                      '_seconds_bucket{modelserver=~"$modelserver",code!~"5.."}[$__rate_interval])))')
    assert refs.metrics == {"modelroute_variant_request_duration_seconds_bucket"}
    assert refs.labels == {"le", "modelserver", "code"}
    refs = references('sum(rate(a_total[5m])) / sum(rate(b_total[5m])) * 100 and on (x) c == 1')
    assert refs.metrics == {"a_total", "b_total", "c"} and refs.labels == {"x"}
    assert references('label_values(modelroute_canary_weight_percent{route="$route"}, modelserver)') == \
        type(refs)(frozenset({"modelroute_canary_weight_percent"}), frozenset({"route", "modelserver"}))
    series = {"a_total": {"x"}, "b_bucket": {"le", "y"}}
    assert missing(series, "sum by (y) (a_total)") == ["label y"]
    assert missing(series, "histogram_quantile(0.5, sum by (le, y) (rate(b_bucket[1m])))") == []
    assert missing(series, "rate(nope_total[1m])") == ["metric nope_total"]


def test_the_dashboards_have_queries() -> None:
    found = list(queries())
    assert {name for name, _, _ in found} == {"gateway-overview.json", "experiment.json"}
    assert len(found) > 30


@pytest.mark.slow
async def test_embedded_metrics_hold_every_series_and_every_dashboard_query(tmp_path: Path) -> None:
    port, bad_port = free_port(), free_port()
    write_manifests(tmp_path / "world.yaml", [
        infer("v1"), infer("v2"), server("v1", port=port, path="/v1/models/v1"),
        server("v2", port=port, path="/v1/models/v2"), canary_route()])
    async with running(tmp_path, plugins=plugin.with_builtin([RefusedByEnvoy()])) as app:
        assert app.admin_port is not None
        await drive(port)
        write_manifests(tmp_path / "poison.yaml", [infer("poison"), server("poison", port=bad_port, path="/p")])
        async with asyncio.timeout(10):
            while ObjectKey("ModelServer", "default", "poison") not in app.loop.quarantine.rejected:
                await asyncio.sleep(0.05)
        text = await scrape_until_complete(app.admin_port)
    series = scrape(text)
    problems = {f"{name} {where}: {expr}": gaps for name, where, expr in queries()
                if (gaps := missing(series, expr))}
    assert not problems, problems
    assert 'modelroute_leader 1.0' in text
    assert 'modelroute_objects{kind="ModelRoute"} 1.0' in text
