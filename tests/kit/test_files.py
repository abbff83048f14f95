"""Atomic JSON files: the text is json's, however it is produced."""

import json
from pathlib import Path

from hypothesis import given, strategies as st

from kit.files import encode, write_json_atomically

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(), inner, max_size=4)), max_leaves=20)


@given(st.one_of(values, st.dictionaries(st.text(), values, max_size=5)), st.sampled_from([None, 1]))
def test_encode_is_json_dumps(doc: object, indent: int | None) -> None:
    assert encode(doc, indent=indent) == json.dumps(doc, indent=indent)


def test_a_file_is_replaced_whole_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "status.json"
    write_json_atomically(target, {"objects": [{"a": 1}], "v": 1}, indent=None)
    write_json_atomically(target, {"objects": [{"a": 2}, {"b": [3]}], "v": 2}, indent=None)
    assert json.loads(target.read_text()) == {"objects": [{"a": 2}, {"b": [3]}], "v": 2}
    assert [p.name for p in target.parent.iterdir()] == ["status.json"]
