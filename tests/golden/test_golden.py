"""Golden tests: every case's compiled output matches its files, and Envoy accepts it.

Regenerate with `pytest tests/golden --update-golden` and review the diff.
"""

from __future__ import annotations

import pytest

from modelroute.envoy_check import validate_many
from tests.support.references import dangling_references
from tests.golden import harness

CASES = harness.cases()


@pytest.fixture(scope="module")
def update(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: harness.Case, update: bool) -> None:
    texts, _ = harness.render(case)
    if update:
        harness.write(case, texts)
        return
    missing = [name for name in texts if not (case.directory / name).exists()]
    assert not missing, f"{case.name}: no expected {missing}; run pytest --update-golden"
    for name, text in texts.items():
        assert (case.directory / name).read_text() == text, f"{case.name}/{name} differs; run pytest --update-golden"
    extra = sorted(p.name for p in case.directory.iterdir() if p.is_file() and p.name not in texts and p.name not in harness.INPUTS)
    assert not extra, f"{case.name}: stale outputs {extra}"


def test_no_stale_case_directories(update: bool) -> None:
    stale = list(harness.stale_directories(CASES))
    if update:
        for directory in stale:
            harness.remove(directory)
        return
    assert not stale, f"outputs without input: {stale}; run pytest --update-golden"


def test_envoy_accepts_every_golden_output() -> None:
    bootstraps = [harness.render(case)[1] for case in CASES]
    verdicts = validate_many(bootstraps)
    failed = {case.name: v.message[-500:] for case, v in zip(CASES, verdicts, strict=True) if not v.ok}
    assert not failed


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_reference_resolves(case: harness.Case) -> None:
    compiled = harness.render_all(case)[2]
    assert dangling_references(compiled.resources) == []


def test_there_are_enough_cases() -> None:
    own = [c for c in CASES if not c.name.startswith("seeds/")]
    assert len(own) >= 15, [c.name for c in own]
