"""Volume name templates: both syntaxes, the sandbox's refusals, and the fast path's equivalence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.templates import TemplateError, render_fast, render_sandboxed, render_volume_name


@pytest.mark.parametrize(
    ("template", "rank", "expected"),
    [
        ("data-$<< dstack.node_rank >>", 1, "data-1"),
        ("data-$<<dstack.node_rank>>", 2, "data-2"),
        ("data-${{ dstack.node_rank }}", 3, "data-3"),
        ("data-${{dstack.job_num}}", 4, "data-4"),
        ("data-$<< dstack.node_rank + 1 >>", 4, "data-5"),
        ("data-$<< dstack.node_rank * 2 >>", 3, "data-6"),
        ("vol-$${{ dstack.node_rank }}", 0, "vol-${{ dstack.node_rank }}"),
        ("a$b", 0, "a$b"),
        ("plain", 7, "plain"),
        ("trailing-$", 0, "trailing-$"),
        ("line\r\nbreak-$<< dstack.node_rank >>", 0, "line\nbreak-0"),
    ],
)
def test_template_renders(template: str, rank: int, expected: str) -> None:
    assert render_volume_name(template, rank) == expected
    assert render_sandboxed(template, rank) == expected


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("x-$<< dstack.nodes_num >>", "uses the unknown variable dstack.nodes_num"),
        ("x-$<< run.name >>", "uses the unknown variable run.name"),
        ("x-${{ secrets.token }}", "uses the unknown variable secrets.token"),
        ("x-$<< dstack.node_rnak >>", "uses the unknown variable dstack.node_rnak"),
        ("x-$<< rank >>", "uses the unknown variable rank"),
    ],
)
def test_unknown_variable_named(template: str, problem: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_volume_name(template, 0)

    assert caught.value.problem == problem
    assert "dstack.node_rank, dstack.job_num" in caught.value.fix


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("$<< ''.__class__ >>", "sandbox does not allow"),
        ("$<< dstack.__slots__ >>", "sandbox does not allow"),
        ("$<< range(10**9) >>", "sandbox does not allow"),
        ("$<< 'x' * 10**9 >>", "sandbox does not allow"),
        ("$<< 10 ** 100000 >>", "sandbox does not allow"),
        ("$<< 'x'.ljust(10**9) >>", "sandbox does not allow"),
        ("$<< '{:>999999999}'.format(1) >>", "sandbox does not allow"),
        ("$<< '%0999999999d' % 1 >>", "sandbox does not allow"),
        ("$<< 1 / 0 >>", "could not be rendered"),
        ("$<< dstack >>", "could not be rendered"),
        ("$<< ((( >>", "invalid expression"),
        ("$<< >>", "invalid expression"),
        ("data-$<< dstack.node_rank", "never closes it with >>"),
        ("data-${{ dstack.node_rank", "never closes it with }}"),
        ("$<<" + "(" * 400 + "1" + ")" * 400 + ">>", "nested too deeply"),
        ("x" * 1001, "more than the 1000"),
        ("a\x00b", "NUL"),
    ],
)
def test_refused_template_is_an_error(template: str, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_volume_name(template, 0)

    assert words in caught.value.problem
    assert caught.value.fix


def test_block_and_comment_syntax_stay_literal() -> None:
    assert render_volume_name("{% if 1 %}x{% endif %}{# c #}{{ 1 }}", 0) == "{% if 1 %}x{% endif %}{# c #}{{ 1 }}"


def test_fast_path_skips_jinja_for_plain_references() -> None:
    assert render_fast("data-$<< dstack.node_rank >>-${{ dstack.job_num }}", 5) == "data-5-5"
    assert render_fast("data-$<< dstack.node_rank + 1 >>", 5) is None
    assert render_fast("data-$<< run.name >>", 5) is None


_IMPORT_CHECK = """
import sys
from pathlib import Path
from engine.project import load_project
load_project(Path(sys.argv[1]))
print("jinja2" in sys.modules)
from engine.templates import render_volume_name
print(render_volume_name(sys.argv[2], 1), "jinja2" in sys.modules)
"""


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("data-$<< dstack.node_rank >>", "False\ndata-1 False\n"),
        ("data-$<< dstack.node_rank + 1 >>", "False\ndata-2 True\n"),
    ],
)
def test_jinja_imported_only_for_sandbox(tmp_path: Path, template: str, expected: str) -> None:
    (tmp_path / "train.dstack.yml").write_text(
        "type: task\nnodes: 2\ncommands: [python train.py]\nvolumes:\n  - data-$<< dstack.node_rank >>:/data\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK, str(tmp_path), template], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def _outcome(render: object, template: str, rank: int) -> tuple[str, str]:
    try:
        return ("ok", render(template, rank))  # type: ignore[operator]
    except TemplateError:
        return ("error", "")


# Pieces that make templates near the edges of both paths: delimiters, escapes, whitespace that
# jinja2 and str.strip() may treat differently, names close to the known ones.
_PIECES = st.sampled_from(
    [
        "$<<",
        ">>",
        "${{",
        "}}",
        "$$",
        "$",
        "dstack",
        ".",
        "node_rank",
        "job_num",
        "nodes_num",
        " ",
        "\t",
        "\n",
        "\r",
        "\x0b",
        "\x1c",
        "\x85",
        "\xa0",
        "\u3000",
        "-",
        "+",
        "1",
        "data",
        "(",
        ")",
        "'",
        "{%",
        "{#",
        "}",
    ]
)
TEMPLATES = st.lists(_PIECES, max_size=12).map("".join) | st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(template=TEMPLATES, rank=st.integers(min_value=0, max_value=20))
def test_fast_path_matches_sandbox(template: str, rank: int) -> None:
    fast = render_fast_or_error(template, rank)
    if fast is None:
        return
    assert fast == _outcome(render_sandboxed, template, rank)


def render_fast_or_error(template: str, rank: int) -> tuple[str, str] | None:
    """The fast path's outcome, or None where it hands the template to jinja2."""
    try:
        rendered = render_fast(template, rank)
    except TemplateError:
        return ("error", "")
    return None if rendered is None else ("ok", rendered)
