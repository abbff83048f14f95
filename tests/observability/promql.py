"""What the dashboards ask Prometheus for, and what a scrape of `/metrics` holds.

`queries()` collects every PromQL expression of the Grafana dashboards in
deploy/overlays/monitoring/dashboards (panel targets and query variables, rows' panels
included); `references(expr)` parses one into the metric names it selects and the label
names it uses (in matchers, `by`/`without`/`on`/`ignoring`/`group_*` lists, and
`label_values`). `missing(scrape, expr)` is what a query asks for that the scrape lacks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO

DASHBOARDS = REPO / "deploy" / "overlays" / "monitoring" / "dashboards"
FUNCTIONS = {
    "abs", "absent", "avg", "avg_over_time", "ceil", "clamp_max", "clamp_min", "count", "count_over_time", "delta",
    "deriv", "floor", "histogram_quantile", "increase", "irate", "label_replace", "label_values", "max",
    "max_over_time", "min", "min_over_time", "quantile", "rate", "round", "scalar", "sort", "sort_desc", "stddev",
    "sum", "sum_over_time", "time", "topk", "bottomk", "vector", "last_over_time",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
            "inf", "nan"}
# Labels Prometheus adds to every scraped series (target labels), not the exporter.
TARGET_LABELS = {"instance", "job", "pod", "namespace", "service", "endpoint", "container"}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"\s*,?")


@dataclass(frozen=True)
class References:
    metrics: frozenset[str]
    labels: frozenset[str]


def queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, where, expression) for every PromQL expression of every dashboard."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())

        def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for item in items:
                yield item
                yield from panels(item.get("panels") or [])

        for panel in panels(doc.get("panels") or []):
            for target in panel.get("targets") or []:
                yield path.name, f"panel {panel['title']!r} {target['refId']}", target["expr"]
        for variable in (doc.get("templating") or {}).get("list") or []:
            if variable.get("type") == "query":
                query = variable["query"]
                yield path.name, f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query


def references(expr: str) -> References:
    """The metric names and label names one expression uses. Grafana's `$var` and
    `$__range`-style placeholders count as values, never as names."""
    labels: set[str] = set()
    text = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors: [5m], [$__rate_interval]
    for match in _MATCHERS.finditer(text):
        body = match.group(1)
        found = _MATCHER.findall(body)
        rest = _MATCHER.sub("", body).strip()
        assert not rest, f"cannot parse label matchers {{{body}}} in {expr!r}"
        labels.update(name for name, _ in found)
    text = _MATCHERS.sub(" ", text)
    for match in _GROUPING.finditer(text):
        labels.update(x.strip() for x in match.group(2).split(",") if x.strip())
    text = _GROUPING.sub(" ", text)
    values = re.match(r"\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_]+)\s*\)\s*$", text)
    if values:
        return References(frozenset({values.group(1)}), frozenset(labels | {values.group(2)}))
    text = re.sub(r"\"(?:[^\"\\]|\\.)*\"", " ", text)  # strings (label_replace arguments)
    text = re.sub(r"\$[a-zA-Z_]+", " ", text)  # Grafana variables
    metrics = set()
    for match in _IDENT.finditer(text):
        name = match.group(0)
        after = text[match.end():].lstrip()
        if name.lower() in KEYWORDS or (name in FUNCTIONS and after.startswith("(")):
            continue
        if re.fullmatch(r"\d+(e\d+)?", name) or text[max(0, match.start() - 1)].isdigit():
            continue
        metrics.add(name)
    return References(frozenset(metrics), frozenset(labels))


def scrape(text: str) -> dict[str, set[str]]:
    """Sample name (histograms: `_bucket`/`_sum`/`_count`) → the label names its series carry."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def missing(series: Mapping[str, set[str]], expr: str) -> list[str]:
    """What `expr` asks for that `series` (a `scrape`) lacks: metric names, and label names
    that none of the expression's metrics carries (`le` belongs to every `_bucket`)."""
    refs = references(expr)
    problems = [f"metric {m}" for m in sorted(refs.metrics) if m not in series]
    carried = set().union(*(series.get(m, set()) for m in refs.metrics)) | TARGET_LABELS
    if any(m.endswith("_bucket") for m in refs.metrics):
        carried.add("le")
    problems += [f"label {label}" for label in sorted(refs.labels - carried)]
    return problems
