"""Loading manifests: document numbering, Lists, JSON, malformed input, files and dirs."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeromesh.api import LoadedDoc, ManifestError, Source, load_path, load_text

POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\n"


def numbers(docs: list[LoadedDoc]) -> list[int]:
    return [d.source.document for d in docs]


def test_source_str() -> None:
    assert str(Source("path/to/f.yaml", 3)) == "path/to/f.yaml: document 3"


@pytest.mark.parametrize(("text", "expected"), [
    ("", []),
    ("# only a comment\n", []),
    (POD % "a", [1]),
    (POD % "a" + "---\n" + POD % "b", [1, 2]),
    (POD % "a" + "---\n# comment only\n---\n" + POD % "b", [1, 3]),
    (POD % "a" + "---\n---\n---\n" + POD % "b", [1, 4]),
    ("---\n" + POD % "a", [1]),
    ("# header comment\n---\n" + POD % "a", [1]),
    ("---\n# c\n---\n" + POD % "a", [2]),
    (POD % "a" + "---\n", [1]),
    (POD % "a" + "...\n---\n" + POD % "b", [1, 2]),
])
def test_document_numbers_count_empty_documents(text: str, expected: list[int]) -> None:
    docs = load_text(text, "f.yaml")
    assert numbers(docs) == expected
    assert all(d.source.file == "f.yaml" for d in docs)


def test_bodies_are_plain_dicts() -> None:
    (doc,) = load_text(POD % "a", "f.yaml")
    assert doc.body == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}


def test_list_expands_to_items_with_the_same_document_number() -> None:
    text = (POD % "first" + "---\n" + "apiVersion: v1\nkind: List\nitems:\n"
            "- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n"
            "- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n"
            "---\n" + POD % "last")
    docs = load_text(text, "f.yaml")
    assert [d.body["metadata"]["name"] for d in docs] == ["first", "a", "b", "last"]
    assert numbers(docs) == [1, 2, 2, 3]


def test_empty_list_yields_nothing() -> None:
    assert load_text("apiVersion: v1\nkind: List\nitems: []\n", "f.yaml") == []
    assert load_text("apiVersion: v1\nkind: List\n", "f.yaml") == []


@pytest.mark.parametrize(("text", "fragment"), [
    ("apiVersion: v1\nkind: List\nitems: {a: 1}\n", "f.yaml: document 1: items: "),
    ("apiVersion: v1\nkind: List\nitems: [1]\n", "f.yaml: document 1: items[0]: "),
])
def test_bad_list_items(text: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_text(text, "f.yaml")
    assert str(info.value).startswith(fragment)


@pytest.mark.parametrize(("text", "expected"), [
    (POD % "a" + "---\nfoo: [1, 2\n",
     "f.yaml: document 2: invalid YAML: did not find expected ',' or ']' at line 6 column 1"),
    (POD % "a" + "---\n# c\n---\nkey: value\n  bad: indent\n",
     "f.yaml: document 3: invalid YAML: mapping values are not allowed in this context at "
     "line 8 column 6"),
    ("a: 1\na: 2\n",
     'f.yaml: document 1: invalid YAML: found duplicate key "a" at line 2 column 1'),
    ("a: !custom x\n", "f.yaml: document 1: invalid YAML: could not determine a constructor"),
    ("a: \"unterminated\n", "f.yaml: document 1: invalid YAML: "),
    ("a:\tb: c\n", "f.yaml: document 1: invalid YAML: "),
    ("a: 2001-13-45\n", "f.yaml: document 1: invalid YAML: month must be in 1..12"),
    ("a: \x00\n", "f.yaml: document 1: invalid YAML: unacceptable character #x0000: "
                   "control characters are not allowed at line 1 column 4"),
])
def test_malformed_yaml_names_file_document_and_position(text: str, expected: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_text(text, "f.yaml")
    assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.parametrize(("text", "got"), [
    ("- a\n- b\n", "got a list"),
    ("just a string\n", "got a str value"),
    ("42\n", "got a int value"),
    (POD % "a" + "---\n[1, 2]\n", "got a list"),
])
def test_document_that_is_not_a_mapping(text: str, got: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_text(text, "f.yaml")
    msg = str(info.value)
    assert msg.startswith("f.yaml: document ") and "expected a Kubernetes object" in msg
    assert got in msg


@pytest.mark.parametrize(("text", "expected"), [
    ("spec:\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
     {"spec": {"portLevelMtls": {"8080": {"mode": "DISABLE"}}}}),
    ("a:\n  true: x\n  null: y\n  1.5: z\n", {"a": {"true": "x", "null": "y", "1.5": "z"}}),
    ("a: 2024-01-02\n", {"a": "2024-01-02"}),
    ("a: 2024-01-02T03:04:05Z\n", {"a": "2024-01-02T03:04:05Z"}),
    ("a: !!binary aGVsbG8=\n", {"a": "aGVsbG8="}),
    ("a: yes\nb: on\nc: 'yes'\n", {"a": True, "b": True, "c": "yes"}),
    ("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n",
     {"base": {"x": 1}, "derived": {"x": 1, "y": 2}}),
    ("<<: {a: 1}\na: 2\n", {"a": 2}),
])
def test_values_become_json_compatible(text: str, expected: dict[str, object]) -> None:
    (doc,) = load_text(text, "f.yaml")
    assert doc.body == expected
    json.dumps(doc.body, allow_nan=False)


@pytest.mark.parametrize(("text", "fragment"), [
    ("a: .nan\n", "f.yaml: document 1: a: the number nan cannot be represented in JSON"),
    ("a: [1, .inf]\n", "f.yaml: document 1: a[1]: the number inf"),
    ("a: !!set {x, y}\n", "f.yaml: document 1: a: a YAML set cannot be represented in JSON"),
])
def test_values_json_cannot_hold(text: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_text(text, "f.yaml")
    assert str(info.value).startswith(fragment)


def test_json_text_is_read_as_one_document() -> None:
    text = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}, indent="\t")
    (doc,) = load_text(text, "f.json")
    assert doc.source == Source("f.json", 1)
    assert doc.body["metadata"] == {"name": "a"}


def test_json_list_expands() -> None:
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n}} for n in "ab"]})
    assert [d.body["metadata"]["name"] for d in load_text(text, "f.json")] == ["a", "b"]


def test_flow_yaml_starting_with_brace_still_reads_as_yaml() -> None:
    (doc,) = load_text("{apiVersion: v1, kind: Pod}\n", "f.yaml")
    assert doc.body == {"apiVersion": "v1", "kind": "Pod"}


# ---- load_path ---------------------------------------------------------------------


def test_load_path_file(tmp_path: Path) -> None:
    f = tmp_path / "one.yaml"
    f.write_text(POD % "a" + "---\n" + POD % "b")
    docs = load_path(str(f))
    assert [d.source for d in docs] == [Source(str(f), 1), Source(str(f), 2)]


def test_load_path_directory_sorted_filtered_not_recursive(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(POD % "b")
    (tmp_path / "a.yaml").write_text(POD % "a1" + "---\n" + POD % "a2")
    (tmp_path / "c.json").write_text(json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"}}))
    (tmp_path / "notes.txt").write_text("not: a manifest\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(POD % "d")
    (tmp_path / "dir.yaml").mkdir()
    docs = load_path(str(tmp_path))
    assert [d.body["metadata"]["name"] for d in docs] == ["a1", "a2", "b", "c"]
    assert [d.source for d in docs] == [
        Source(os.path.join(str(tmp_path), "a.yaml"), 1),
        Source(os.path.join(str(tmp_path), "a.yaml"), 2),
        Source(os.path.join(str(tmp_path), "b.yml"), 1),
        Source(os.path.join(str(tmp_path), "c.json"), 1),
    ]


def test_load_path_empty_directory(tmp_path: Path) -> None:
    assert load_path(str(tmp_path)) == []


def test_load_path_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match=r"nope\.yaml: no such file or directory"):
        load_path(missing)


def test_load_path_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(ManifestError) as info:
        load_path(str(f))
    assert str(info.value).startswith(f"{f}: not UTF-8 text")


def test_load_path_strips_bom(tmp_path: Path) -> None:
    f = tmp_path / "bom.yaml"
    f.write_bytes("\ufeff".encode() + (POD % "a").encode())
    assert load_path(str(f))[0].body["kind"] == "Pod"


def test_load_path_error_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(POD % "a" + "---\nx: [\n")
    with pytest.raises(ManifestError) as info:
        load_path(str(f))
    assert str(info.value).startswith(f"{f}: document 2: invalid YAML: ")


def test_load_path_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(POD % "a" + "---\n" + POD % "b"))
    docs = load_path("-")
    assert [d.source for d in docs] == [Source("<stdin>", 1), Source("<stdin>", 2)]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_load_text_only_raises_manifest_error(text: str) -> None:
    try:
        docs = load_text(text, "fuzz.yaml")
    except ManifestError as e:
        assert str(e).startswith("fuzz.yaml")
        return
    for d in docs:
        assert isinstance(d.body, dict)
        json.dumps(d.body, allow_nan=False)


YAMLISH = st.text(alphabet=st.sampled_from(list("ab:-[]{}!&*#|>'\"\n\t ,.?%@`01yn")), max_size=80)


@settings(max_examples=300, deadline=None)
@given(YAMLISH)
def test_load_text_only_raises_manifest_error_on_yaml_like_text(text: str) -> None:
    with contextlib.suppress(ManifestError):
        load_text(text, "fuzz.yaml")
