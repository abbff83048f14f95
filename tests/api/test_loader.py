"""Reading files the way `kubectl apply -f` does, and reporting every problem as one line."""

from __future__ import annotations

import yaml

import os
from pathlib import Path

import pytest

from routing_engine.api.errors import ManifestError
from routing_engine.api.loader import load_manifests, load_text, parse_document
from routing_engine.api.resources import ModelServer, Secret

SERVER = """\
apiVersion: networking.matrixinfer.ai/v1alpha1
kind: ModelServer
metadata:
  name: {name}
spec:
  modelInferRef: {{name: infer}}
  service: {{port: 8080}}
  routing: {{path: /v1/models/{name}}}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_error_line_format() -> None:
    err = ManifestError("examples/x.yaml", 2, "ModelServer", "default", "llama-server", "spec.routing.timeout", '"30" is not a duration (use 30s)')
    assert str(err) == 'examples/x.yaml#2: ModelServer default/llama-server: spec.routing.timeout: "30" is not a duration (use 30s)'
    assert str(ManifestError("a.yaml", None, None, None, None, "", "not valid YAML:\n  bad")) == "a.yaml: not valid YAML: bad"
    assert err.object_key is not None and str(err.object_key) == "ModelServer default/llama-server"


def test_directory_is_read_recursively_sorted_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    _write(tmp_path / "b.yaml", SERVER.format(name="b"))
    _write(tmp_path / "a" / "z.yml", SERVER.format(name="z"))
    _write(tmp_path / "c.json", '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}')
    _write(tmp_path / ".#b.yaml", "not: [valid")  # an editor's lock file
    _write(tmp_path / ".git" / "x.yaml", "not: [valid")
    _write(tmp_path / "notes.txt", "not: [valid")
    objects, errors = load_manifests([tmp_path])
    assert errors == []
    assert [o.metadata.name for o in objects] == ["z", "b", "s"]
    assert isinstance(objects[2], Secret) and objects[2].value("k") == b"v"


def test_multi_document_file_with_empty_documents_and_a_list(tmp_path: Path) -> None:
    items = "\n".join("  " + line for line in SERVER.format(name="in-list").splitlines())
    text = f"---\n{SERVER.format(name='first')}---\n---\napiVersion: v1\nkind: List\nitems:\n-\n{items}\n"
    objects, errors = load_text(text, "multi.yaml")
    assert errors == []
    assert [o.metadata.name for o in objects] == ["first", "in-list"]


def test_errors_inside_a_list_name_the_item(tmp_path: Path) -> None:
    _, errors = load_text("apiVersion: v1\nkind: List\nitems:\n- 5\n", "l.yaml")
    assert [str(e) for e in errors] == ["l.yaml#1: items[0]: 5 is not an object (a mapping with apiVersion, kind, metadata)"]
    _, errors = load_text("apiVersion: v1\nkind: List\nitems: 3\n", "l.yaml")
    assert [e.path for e in errors] == ["items"]


def test_document_index_is_one_based_and_counts_every_document() -> None:
    text = SERVER.format(name="ok") + "---\nkind: ModelServer\n"
    _, errors = load_text(text, "f.yaml")
    assert len(errors) == 1 and errors[0].index == 2 and errors[0].path == "apiVersion"


def test_duplicates_across_files_keep_the_first(tmp_path: Path) -> None:
    first = _write(tmp_path / "1.yaml", SERVER.format(name="dup"))
    second = _write(tmp_path / "2.yaml", SERVER.format(name="dup").replace("8080", "9090"))
    objects, errors = load_manifests([first, second])
    assert [o.spec.service.port for o in objects if isinstance(o, ModelServer)] == [8080]
    assert [str(e) for e in errors] == [
        f"{second}#1: ModelServer default/dup: duplicate: ModelServer default/dup is already defined at {first}#1"
    ]


def test_same_name_in_other_namespace_or_kind_is_no_duplicate() -> None:
    other_ns = SERVER.format(name="x").replace("name: x", "name: x\n  namespace: prod")
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n"
    objects, errors = load_text(SERVER.format(name="x") + "---\n" + other_ns + "---\n" + secret, "f.yaml")
    assert errors == [] and len(objects) == 3


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("a: [1, 2\n", "not valid YAML: "),
        ("a: b\n c: d\n", "not valid YAML: "),
        ("key: !!python/object:os.system x\n", "not valid YAML: "),
        ("? [a, b]\n: c\n", "not valid YAML: "),
        ("a: \x07\n", "not valid YAML: "),
        ("n: " + "9" * 5000 + "\n", "cannot be read: "),
    ],
    ids=["unclosed", "indent", "python-tag", "list-key", "control-char", "5000-digit-int"],
)
def test_unparsable_yaml_is_one_error_for_the_file(text: str, rule: str) -> None:
    objects, errors = load_text(SERVER.format(name="before") + "---\n" + text, "bad.yaml")
    assert objects == []  # a half-saved file must not half-apply
    assert len(errors) == 1
    assert errors[0].rule.startswith(rule) and errors[0].index is None
    assert "\n" not in str(errors[0])


def test_yaml_syntax_error_names_line_and_column() -> None:
    _, errors = load_text("a: 1\nb: [1, 2\n", "f.yaml")
    assert "(line 3, column 1)" in errors[0].rule


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("[1, 2]", "a list is not an object"),
        ("just text", '"just text" is not an object'),
        ("42", "42 is not an object"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", '"Pod" is not supported (supported: ModelServer (networking.matrixinfer.ai/v1alpha1)'),
        ("apiVersion: v1\nkind: [ModelServer]\n", "a list is not supported"),
        ("apiVersion: v1\nmetadata: {name: p}\n", "is required (supported: "),
        ("apiVersion: networking.matrixinfer.ai/v1alpha1\nkind: ModelServer\nmetadata: 5\nspec: {}\n", "5 must be a mapping"),
        ("apiVersion: networking.matrixinfer.ai/v1alpha1\nkind: ModelServer\nmetadata: {name: 7}\nspec: {}\n", "7 must be a string"),
    ],
)
def test_documents_that_are_not_objects(text: str, rule: str) -> None:
    objects, errors = load_text(text, "f.yaml")
    assert objects == []
    assert any(rule in e.rule for e in errors), [str(e) for e in errors]


def test_deeply_nested_input_is_an_error_not_a_crash() -> None:
    deep = "[" * 5000 + "]" * 5000
    _, errors = load_text(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata: {deep}\n", "deep.yaml")
    assert len(errors) == 1 and errors[0].file == "deep.yaml"
    doc: list[object] = []
    for _ in range(3000):
        doc = [doc]
    _, errors = parse_document({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": doc}}, source="api", index=1)
    assert errors and errors[0].file == "api"


def test_self_referencing_yaml_alias_is_rejected() -> None:
    text = SERVER.format(name="r") + "  authentication: {enabled: false, config: &a {x: [*a]}}\n"
    objects, errors = load_text(text, "alias.yaml")
    assert objects == []
    assert [e.rule for e in errors] == ["is nested more than 64 levels deep"]


def test_alias_bomb_is_cut_off() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n" + "\n".join(lines) + "\n"
    objects, errors = load_text(text, "bomb.yaml")
    assert objects == [] and "more than 100000 values" in errors[0].rule


def test_nesting_limit() -> None:
    doc: object = "leaf"
    for _ in range(70):
        doc = {"k": doc}
    _, errors = parse_document({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "x": doc}, source="api", index=1)
    assert [e.rule for e in errors] == ["is nested more than 64 levels deep"]


def test_duplicate_keys_are_an_error_like_kubectl() -> None:
    text = SERVER.format(name="d") + "  routing: {path: /other}\n"
    objects, errors = load_text(text, "dup.yaml")
    assert objects == []
    assert [str(e) for e in errors] == ['dup.yaml: not valid YAML: duplicate key "routing" (line 9, column 3)']
    merged = "base: &b {x: 1}\nother:\n  <<: *b\n  x: 2\n"
    assert not any("duplicate key" in e.rule for e in load_text(merged, "merge.yaml")[1])  # `<<` may override


def test_json_files(tmp_path: Path) -> None:
    good = _write(tmp_path / "s.json", '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}')
    bad = _write(tmp_path / "t.json", '{"apiVersion": "v1",\n "kind": }')
    objects, errors = load_manifests([good, bad])
    assert [o.metadata.name for o in objects] == ["s"]
    assert [str(e) for e in errors] == [f"{bad}: not valid JSON: Expecting value (line 2, column 10)"]


def test_missing_unreadable_and_binary_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    locked = _write(tmp_path / "locked.yaml", SERVER.format(name="l"))
    locked.chmod(0)
    try:
        objects, errors = load_manifests([missing, binary, locked])
    finally:
        locked.chmod(0o644)
    rules = [e.rule for e in errors]
    assert rules[0] == "no such file or directory"
    assert rules[1] == "is not UTF-8 text (byte 3)"
    if os.geteuid() != 0:  # root reads anything
        assert rules[2] == "cannot be read: Permission denied" and objects == []


def test_secret_accepts_kubernetes_fields_and_hides_values() -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: keys, namespace: prod, uid: abc}\ntype: Opaque\nimmutable: true\ndata: {key1: aGVsbG8=}\n"
    objects, errors = load_text(text, "s.yaml")
    assert errors == []
    (secret,) = objects
    assert isinstance(secret, Secret) and secret.value("key1") == b"hello"
    assert "aGVsbG8" not in repr(secret)


def test_secret_data_is_base64_as_the_api_server_decodes_it() -> None:
    """Go's standard base64 (the API server's): padded, line breaks skipped (a PEM pasted
    as folded base64 loads), anything else refused naming the key and never the value."""
    def secret(value: str) -> str:
        return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n  k: {value}\n"

    (folded,), errors = load_text(secret("|\n    aGVs\n    bG8=\n"), "s.yaml")
    assert errors == [] and isinstance(folded, Secret) and folded.value("k") == b"hello"
    for bad in ("aGVsbG8", "aGVs bG8=", "aGVs_bG8=", "'!!!not-base64!!!'"):
        objects, errors = load_text(secret(bad), "s.yaml")
        assert objects == [] and [e.path for e in errors] == ["data.k"]
        assert errors[0].rule.startswith("is not base64") and bad.strip("'") not in str(errors[0])
        assert str(errors[0]).startswith("s.yaml#1: Secret default/s: data.k: is not base64")


def test_secret_material_envoy_would_refuse_is_an_error_in_files_only() -> None:
    """Files: a TLS or JWKS Secret Envoy would refuse is an error naming the key (the last
    good version of the file keeps serving). From the Kubernetes API it still loads: the
    ModelServer using it fails closed with the same reason (resolve)."""
    import base64

    from tests.translate.builders import JWKS, TLS_CERT, TLS_KEY

    def tls_doc(cert: bytes, key: bytes) -> str:
        data = {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}
        return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: tls}}\ntype: kubernetes.io/tls\ndata: {data}\n"

    assert load_text(tls_doc(TLS_CERT, TLS_KEY), "s.yaml")[1] == []
    objects, errors = load_text(tls_doc(b"hello", TLS_KEY), "s.yaml")
    assert objects == [] and [(e.path, "holds no PEM certificate" in e.rule) for e in errors] == [('data["tls.crt"]', True)]
    other_key = TLS_KEY.replace(b"MIGHAgEAMBMG", b"MIGHAgEAMBMH")
    _, errors = load_text(tls_doc(TLS_CERT, other_key), "s.yaml")
    assert [e.path for e in errors] == ['data["tls.key"]']
    jwks = "apiVersion: v1\nkind: Secret\nmetadata: {name: j}\nstringData:\n  jwks: '%s'\n"
    assert load_text(jwks % JWKS, "j.yaml")[1] == []
    _, errors = load_text(jwks % '{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}', "j.yaml")
    assert [e.path for e in errors] == ["stringData.jwks"] and "no key Envoy can use" in errors[0].rule
    obj, errors = parse_document(yaml.safe_load(tls_doc(b"hello", TLS_KEY)), source="kubernetes", index=0)
    assert errors == [] and isinstance(obj, Secret)


def test_parse_document_for_the_kubernetes_provider() -> None:
    import yaml

    obj, errors = parse_document(yaml.safe_load(SERVER.format(name="k")), source="kubernetes", index=0)
    assert errors == [] and isinstance(obj, ModelServer) and obj.key.name == "k"
    obj, errors = parse_document({"kind": "ModelServer"}, source="kubernetes", index=0)
    assert obj is None and [e.path for e in errors] == ["apiVersion"]


def test_every_error_of_a_document_is_reported() -> None:
    text = SERVER.format(name="m").replace("8080", "0").replace("/v1/models/m", "v1")
    _, errors = load_text(text, "f.yaml")
    assert sorted(e.path for e in errors) == ["spec.routing.path", "spec.service.port"]


def test_secret_errors_never_show_the_values() -> None:
    _, errors = load_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {p: 123456789}\n", "s.yaml")
    assert [e.rule for e in errors] == ["the value must be a string"]
    assert "123456789" not in str(errors[0])


def test_long_values_do_not_make_long_lines() -> None:
    text = SERVER.format(name="x").replace("name: infer", "name: " + "X" * 100_000)
    _, errors = load_text(text, "long.yaml")
    assert len(errors) == 1 and len(str(errors[0])) < 600


def test_a_manifest_over_3_mib_is_refused_unread(tmp_path: Path) -> None:
    from routing_engine.api.loader import MAX_MANIFEST_BYTES

    big = tmp_path / "huge.yaml"
    big.write_text("# " + "x" * MAX_MANIFEST_BYTES + "\n")
    objects, errors = load_manifests([big])
    assert objects == []
    assert [str(e) for e in errors] == [
        f"{big}: is {MAX_MANIFEST_BYTES + 3} bytes; a manifest may be at most {MAX_MANIFEST_BYTES} bytes "
        "(3 MiB, the Kubernetes API server's limit)"]
    assert load_text("# " + "é" * (MAX_MANIFEST_BYTES // 2), "<stdin>")[1][0].rule.startswith(
        f"is {MAX_MANIFEST_BYTES + 2} bytes")


def test_what_a_user_writes_round_trips_unchanged() -> None:
    """No defaults appear on dump, and a header written as a bare string stays one."""
    import yaml

    from tests.support import REPO

    for file in sorted((REPO / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            objects, errors = load_text(yaml.safe_dump(doc), str(file))
            assert not errors, errors
            (obj,) = objects
            assert obj.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc, file
