"""Render network volume names such as `data-$<< dstack.node_rank >>` for one node.

Only network volume names are templates. An expression is written `$<< expr >>` (volplan's
syntax) or `${{ expr }}` (dstack's); `$$` is an escaped `$`, and whitespace inside the delimiters
does not matter. The variables are `dstack.node_rank` and its alias `dstack.job_num`.

Expressions are evaluated by jinja2's sandbox (engine.template_sandbox). volplan splits the
text into literal parts and expressions itself, so jinja2 never parses the user's delimiters. A
template whose expressions are all plain references to a known variable takes a fast path that
substitutes the rank without jinja2, so jinja2 is imported only when a template needs it.
`tests/test_templates.py` checks that both paths accept and reject the same templates.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

KNOWN_VARIABLES = ("dstack.node_rank", "dstack.job_num")
MAX_TEMPLATE_LENGTH = 1000
# Bounds on what one expression may build, far above anything a volume name needs.
MAX_SEQUENCE_LENGTH = 100_000
MAX_POWER_BITS = 4096
_OPENINGS = (("$<<", ">>"), ("${{", "}}"))
# jinja2's lexer reads whitespace with `\s`, so the fast path strips the same characters.
_SURROUNDING_SPACE = re.compile(r"^\s+|\s+$")


class TemplateError(ValueError):
    """A template that cannot be rendered, with `fix`: what to write instead."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class Expression:
    """The text between `$<<` and `>>` (or `${{` and `}}`), without surrounding whitespace."""

    source: str


Part = str | Expression


def is_template(text: str) -> bool:
    return "$<<" in text or "${{" in text or "$$" in text


def render_volume_name(template: str, node_rank: int) -> str:
    """Render a volume name template for one node, by the fast path where it applies."""
    rendered = render_fast(template, node_rank)
    return rendered if rendered is not None else render_sandboxed(template, node_rank)


def render_fast(template: str, node_rank: int) -> str | None:
    """Substitute plain references to known variables without jinja2; None when jinja2 is needed."""
    parts = split_template(template)
    if "\r" in template:
        # jinja2 turns \r and \r\n in literal text into \n.
        return None
    rendered = []
    for part in parts:
        if isinstance(part, str):
            rendered.append(part)
        elif part.source in KNOWN_VARIABLES:
            rendered.append(str(node_rank))
        else:
            return None
    return "".join(rendered)


def render_sandboxed(template: str, node_rank: int) -> str:
    """Render with jinja2's sandbox, whatever the template contains."""
    # Imported here: jinja2 adds about 10 ms to a command (python -X importtime), and most
    # templates take the fast path.
    from engine.template_sandbox import render_in_sandbox

    return render_in_sandbox(template, node_rank)


@functools.lru_cache(maxsize=65536)
def split_template(template: str) -> tuple[Part, ...]:
    """Split a template into literal text and expressions; `$$` becomes a literal `$`."""
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(
            f"is {len(template)} characters long, more than the {MAX_TEMPLATE_LENGTH} a template may have",
            "Shorten the name.",
        )
    if "\x00" in template:
        raise TemplateError("contains a NUL character", "Remove it.")

    parts: list[Part] = []
    literal: list[str] = []
    position = 0
    while position < len(template):
        dollar = template.find("$", position)
        if dollar == -1:
            literal.append(template[position:])
            break
        literal.append(template[position:dollar])
        position = _read_after_dollar(template, dollar, parts, literal)

    if literal:
        parts.append("".join(literal))
    return tuple(part for part in parts if part != "")


def _read_after_dollar(template: str, dollar: int, parts: list[Part], literal: list[str]) -> int:
    """Read what follows a `$` at `dollar`; return the position after it."""
    if template.startswith("$$", dollar):
        literal.append("$")
        return dollar + 2

    for opening, closing in _OPENINGS:
        if not template.startswith(opening, dollar):
            continue
        end = template.find(closing, dollar + len(opening))
        if end == -1:
            raise TemplateError(
                f"opens an expression with {opening} but never closes it with {closing}",
                f"Write {opening} dstack.node_rank {closing}, or $$ for a literal $.",
            )
        if literal:
            parts.append("".join(literal))
            literal.clear()
        parts.append(Expression(_SURROUNDING_SPACE.sub("", template[dollar + len(opening) : end])))
        return end + len(closing)

    literal.append("$")
    return dollar + 1
