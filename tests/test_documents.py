from __future__ import annotations

import pytest
import yaml

from engine.documents import MAX_FILE_BYTES, load_document


def test_positions_follow_field_paths() -> None:
    document, issues = load_document("a.yml", "name: x\nvolumes:\n  - name: data\n    path: /data\n")
    assert issues == []
    assert document is not None
    assert document.positions[("volumes", 0, "path")] == (4, 11)
    assert document.key_positions[("name",)] == (1, 1)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("a: 1\na: 2\n", 2, "duplicate key"),
        ("a: 1\n---\nb: 2\n", 2, "several YAML documents"),
        ("a: [1\n", 2, "not valid YAML"),
        ("a:\n\t- b\n", 2, "not valid YAML"),
    ],
)
def test_yaml_problems_name_the_line(text: str, line: int, problem: str) -> None:
    _, issues = load_document("a.yml", text)
    assert len(issues) == 1
    assert issues[0].line == line
    assert problem in issues[0].problem


def test_empty_file_rejected() -> None:
    document, issues = load_document("a.yml", "")
    assert document is None
    assert issues[0].problem == "is empty"


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 10)}]")
    document, issues = load_document("bomb.yml", "\n".join(lines) + "\n")
    assert document is None
    assert "YAML nodes" in issues[0].problem


def test_oversized_file_rejected() -> None:
    _, issues = load_document("big.yml", b"a" * (MAX_FILE_BYTES + 1))
    assert "limit" in issues[0].problem


def test_non_utf8_rejected() -> None:
    _, issues = load_document("bin.yml", b"name: \xff\xfe\n")
    assert "UTF-8" in issues[0].problem


def test_merge_keys_are_read() -> None:
    document, issues = load_document("m.yml", "base: &b {size: 10GB}\nvol:\n  <<: *b\n  name: x\n")
    assert issues == []
    assert document is not None
    assert document.data["vol"] == {"size": "10GB", "name": "x"}


def test_scalars_typed_as_pyyaml_does() -> None:
    text = (
        "plain: data\n"
        "quoted: '123'\n"
        "tagged: !!str 5\n"
        "number: 123\n"
        "real: 1.5\n"
        "flag: true\n"
        "empty: null\n"
        "tilde: ~\n"
        "list: [a, 2, 'b']\n"
        "7: seven\n"
    )
    document, issues = load_document("s.yml", text)
    assert issues == []
    assert document is not None
    assert document.data == yaml.safe_load(text)
    assert document.data["quoted"] == "123"
    assert document.data["tagged"] == "5"
    assert document.data["number"] == 123
    assert document.data[7] == "seven"


def test_non_scalar_key_rejected() -> None:
    document, issues = load_document("k.yml", "? [a, b]\n: value\n")
    assert document is None
    assert "YAML key or tag" in issues[0].problem
