"""Render network volume names such as `data-$<< dstack.node_rank >>` for one node.

Only volume names are templates. The variables are `dstack.node_rank` and its alias
`dstack.job_num`; `$$` is an escaped `$`.
"""

from __future__ import annotations

import re

# `$<< expr >>` (volplan's syntax) and `${{ expr }}` (dstack's).
_EXPRESSION = re.compile(r"\$\$|\$<<\s*(?P<a>[^>]*?)\s*>>|\$\{\{\s*(?P<b>[^}]*?)\s*\}\}")
KNOWN_VARIABLES = ("dstack.node_rank", "dstack.job_num")


class TemplateError(ValueError):
    """A template that cannot be rendered; `fix` says what to write instead."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def is_template(text: str) -> bool:
    return "$<<" in text or "${{" in text or "$$" in text


def render_volume_name(template: str, node_rank: int) -> str:
    """Substitute the node rank into a volume name template."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group("a") if match.group("a") is not None else match.group("b")
        if expression in KNOWN_VARIABLES:
            return str(node_rank)
        raise TemplateError(
            f"uses the unknown variable {expression!r}",
            f"Volume names may use {' or '.join(KNOWN_VARIABLES)}, as in data-$<< dstack.node_rank >>.",
        )

    return _EXPRESSION.sub(substitute, template)
