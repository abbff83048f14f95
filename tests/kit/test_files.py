"""Atomic files: a reader sees the old document or the new one, never half of one."""

import json
from pathlib import Path

import pytest

from kit.files import write_json_atomically, write_text_atomically


def test_a_file_is_replaced_whole_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "status.json"
    write_json_atomically(target, {"objects": [{"a": 1}], "v": 1})
    write_text_atomically(target, json.dumps({"objects": [{"a": 2}, {"b": [3]}], "v": 2}))
    assert json.loads(target.read_text()) == {"objects": [{"a": 2}, {"b": [3]}], "v": 2}
    assert [p.name for p in target.parent.iterdir()] == ["status.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_json_atomically(target, {"v": 1})
    with pytest.raises(UnicodeEncodeError):
        write_text_atomically(target, "\udc80")  # fails while writing the temporary file
    assert json.loads(target.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["state.json"]
