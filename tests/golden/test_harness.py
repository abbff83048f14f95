"""The golden harness itself: --update-golden writes outputs and removes stale ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden import harness


def test_write_replaces_outputs_and_keeps_inputs(tmp_path: Path) -> None:
    case = harness.Case("c", tmp_path / "c", (tmp_path / "c" / "input.yaml",))
    case.directory.mkdir()
    (case.directory / "input.yaml").write_text("kept")
    (case.directory / "world.yaml").write_text("kept")
    (case.directory / "old-output.yaml").write_text("stale")
    harness.write(case, {"routes.yaml": "[]\n"})
    assert sorted(p.name for p in case.directory.iterdir()) == ["input.yaml", "routes.yaml", "world.yaml"]


def test_directories_without_input_are_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "GOLDEN", tmp_path)
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "input.yaml").write_text("")
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "routes.yaml").write_text("[]")
    (tmp_path / "seeds" / "removed-seed").mkdir(parents=True)
    (tmp_path / "seeds" / "removed-seed" / "routes.yaml").write_text("[]")
    live = [harness.Case("live", tmp_path / "live", (tmp_path / "live" / "input.yaml",))]
    assert list(harness.stale_directories(live)) == [tmp_path / "gone", tmp_path / "seeds" / "removed-seed"]
