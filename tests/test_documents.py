from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from engine.documents import MAX_FILE_BYTES, _Composer, _PythonComposer, _TagResolver, compose, load_document


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


def test_value_key_read_as_pyyaml() -> None:
    text = "=: first\nname: x\n"
    document, issues = load_document("v.yml", text)
    assert issues == []
    assert document is not None
    assert document.data == yaml.safe_load(text)


# Plain scalars that PyYAML's implicit resolvers read as every type, and near misses of each.
_SCALARS = [
    "data", "yes", "No", "off", "TRUE", "y", "~", "null", "Null", "nul", "", "0", "-1", "+7", "0x1F",
    "0o17", "017", "1_000", "1:30", "1.5", "1e3", "1.0e+3", ".inf", "-.Inf", ".nan", "1.", "2001-12-14",
    "2001-12-14t21:59:43.10-05:00", "2001-13-99", "<<", "=", "'123'", '"yes"', "!!str 5", "a b", "$<< x >>",
]  # fmt: skip


def _tags(node: yaml.Node) -> list[str]:
    tags = [node.tag]
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            tags += _tags(key) + _tags(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            tags += _tags(item)
    return tags


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_SCALARS), st.sampled_from(_SCALARS)), min_size=1, max_size=6),
    st.lists(st.sampled_from(_SCALARS), max_size=4),
)
def test_composer_tags_match_safe_loader(pairs: list[tuple[str, str]], items: list[str]) -> None:
    lines = [f"{key}: {value}" for key, value in pairs]
    lines.append(f"list: [{', '.join(item or '~' for item in items)}]")
    text = "\n".join(lines) + "\n"
    try:
        expected = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return

    for composer_class in {_Composer, _PythonComposer}:
        composed = compose(text, composer_class)

        assert composed is not None
        assert expected is not None
        assert _tags(composed) == _tags(expected)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_SCALARS), st.booleans(), st.booleans())
def test_tag_resolver_matches_pyyaml(value: str, plain: bool, quoted: bool) -> None:
    for kind in (ScalarNode, SequenceNode, MappingNode):
        expected = Resolver().resolve(kind, value, (plain, quoted))  # type: ignore[no-untyped-call]

        assert _TagResolver().resolve(kind, value, (plain, quoted)) == expected
