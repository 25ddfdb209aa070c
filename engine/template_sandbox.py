"""Render volume name templates with jinja2's `SandboxedEnvironment` and `StrictUndefined`.

engine.templates splits a template into literal parts and expressions, and this module joins
them again with jinja2 delimiters that contain a NUL character, which a template may not contain,
so block and comment syntax cannot be opened.

The sandbox is narrowed further: attributes are denied except the known variables and a list of
string methods, and every operation that can build a large value (`*`, `**`, `+`, `replace`,
padding widths, call arguments) is checked before it runs. With the template length bounded, one
render therefore allocates at most about MAX_TEMPLATE_LENGTH / 10 values of MAX_SEQUENCE_LENGTH
characters each.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from engine.templates import (
    KNOWN_VARIABLES,
    MAX_POWER_BITS,
    MAX_SEQUENCE_LENGTH,
    TemplateError,
    split_template,
)

# String methods a template may call. Each returns at most as much as its input, except
# `replace` and the padding methods, whose result sizes `call` checks before calling them.
STRING_METHODS = frozenset(
    {
        "capitalize", "center", "count", "endswith", "find", "isalnum", "isalpha", "isdigit", "islower",
        "isupper", "ljust", "lower", "lstrip", "removeprefix", "removesuffix", "replace", "rfind", "rjust",
        "rsplit", "rstrip", "split", "startswith", "strip", "title", "upper", "zfill",
    }
)  # fmt: skip

_VARIABLE_START = "\x00<"
_VARIABLE_END = ">\x00"
_KNOWN_HINT = f"Known variables: {', '.join(KNOWN_VARIABLES)}, as in data-$<< dstack.node_rank >>."


def render_in_sandbox(template: str, node_rank: int) -> str:
    """Render with jinja2's sandbox, whatever the template holds."""
    compiled = _compile(template)
    try:
        rendered = compiled.render(dstack=_DstackVariables(node_rank))
    except jinja2.UndefinedError as error:
        raise TemplateError(_undefined_problem(template, error), _KNOWN_HINT) from None
    except jinja2.exceptions.SecurityError as error:
        raise TemplateError(f"does something the template sandbox does not allow ({error})", _KNOWN_HINT) from None
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as error:
        raise TemplateError(f"could not be rendered ({_describe(error)})", _KNOWN_HINT) from None
    except RecursionError:
        raise TemplateError("is nested too deeply to render", "Simplify the expression.") from None
    if len(rendered) > MAX_SEQUENCE_LENGTH:
        raise TemplateError(
            f"renders to {len(rendered)} characters, more than the {MAX_SEQUENCE_LENGTH} a rendering may have",
            _KNOWN_HINT,
        )
    return rendered


@functools.lru_cache(maxsize=4096)
def _compile(template: str) -> jinja2.Template:
    source = "".join(
        part if isinstance(part, str) else f"{_VARIABLE_START} {part.source} {_VARIABLE_END}"
        for part in split_template(template)
    )
    try:
        return _ENVIRONMENT.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"has an invalid expression ({error.message})", _KNOWN_HINT) from None
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError) as error:
        raise TemplateError(f"could not be compiled ({_describe(error)})", _KNOWN_HINT) from None
    except RecursionError:
        raise TemplateError("is nested too deeply to compile", "Simplify the expression.") from None


class _DstackVariables:
    """The `dstack` namespace of one node; its only attributes are the known variables."""

    __slots__ = ("job_num", "node_rank")

    def __init__(self, node_rank: int) -> None:
        self.node_rank = node_rank
        self.job_num = node_rank

    def __str__(self) -> str:
        raise TypeError("dstack is a namespace, not a value: write dstack.node_rank")


class _VolumeNameSandbox(SandboxedEnvironment):
    """jinja2's sandbox, also bounding what one expression may allocate.

    The stock sandbox bounds `range()` only; `'x' * 10**9`, `9 ** 9 ** 9` or `'x'.ljust(10**9)`
    would exhaust memory or time. Intercepted operators are also never folded at compile time.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, _DstackVariables):
            return attr in _DstackVariables.__slots__
        return isinstance(obj, str) and attr in STRING_METHODS

    def wrap_str_format(self, value: Any) -> None:
        # jinja2 returns a sandboxed str.format before it calls is_safe_attribute, so deny it here.
        return None

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            _check_sum(left, right)
        elif operator == "%" and isinstance(left, str):
            raise jinja2.exceptions.SecurityError("string formatting with % is not allowed")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        for argument in (*args, *kwargs.values()):
            if isinstance(argument, int) and not isinstance(argument, bool) and abs(argument) > MAX_SEQUENCE_LENGTH:
                raise jinja2.exceptions.SecurityError(f"a call argument above {MAX_SEQUENCE_LENGTH} is not allowed")
        if getattr(__obj, "__name__", "") in ("format", "format_map"):
            raise jinja2.exceptions.SecurityError("str.format is not allowed")
        if getattr(__obj, "__name__", "") == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            _check_replace(__obj.__self__, args)
        return super().call(__context, __obj, *args, **kwargs)


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, (list, tuple)) or isinstance(right, (list, tuple)):
        # Repeating a list of lists would bound the outer list only, not what it prints as.
        raise jinja2.exceptions.SecurityError("repeating a list is not allowed")
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str) and isinstance(count, int) and len(sequence) * max(count, 0) > MAX_SEQUENCE_LENGTH:
            raise jinja2.exceptions.SecurityError(f"a string longer than {MAX_SEQUENCE_LENGTH} is not allowed")
    integers = isinstance(left, int) and isinstance(right, int)
    if integers and left.bit_length() + right.bit_length() > MAX_POWER_BITS:
        raise jinja2.exceptions.SecurityError(f"a product above 2**{MAX_POWER_BITS} is not allowed")


def _check_sum(left: Any, right: Any) -> None:
    sequences = isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple))
    if sequences and len(left) + len(right) > MAX_SEQUENCE_LENGTH:
        raise jinja2.exceptions.SecurityError(f"a sequence longer than {MAX_SEQUENCE_LENGTH} is not allowed")


def _check_replace(text: str, args: tuple[Any, ...]) -> None:
    """Bound the result of `text.replace(old, new[, count])` before it is built."""
    if len(args) < 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
        return
    old, new = args[0], args[1]
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
        occurrences = min(occurrences, args[2])
    if len(text) + occurrences * (len(new) - len(old)) > MAX_SEQUENCE_LENGTH:
        raise jinja2.exceptions.SecurityError(f"a string longer than {MAX_SEQUENCE_LENGTH} is not allowed")


def _check_power(base: Any, exponent: Any) -> None:
    integers = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0
    if integers and exponent * math.log2(abs(base)) > MAX_POWER_BITS:
        raise jinja2.exceptions.SecurityError(f"a power above 2**{MAX_POWER_BITS} is not allowed")


def _only_text(value: Any) -> Any:
    """Let an expression print a string or a number only, never a Python object's repr."""
    if isinstance(value, (str, int, float, jinja2.Undefined)):
        return value
    if isinstance(value, _DstackVariables):
        raise TypeError("dstack is a namespace, not a value: write dstack.node_rank")
    raise TypeError(f"an expression must give a string or a number, not a {type(value).__name__}")


def _make_environment() -> _VolumeNameSandbox:
    environment = _VolumeNameSandbox(
        finalize=_only_text,
        variable_start_string=_VARIABLE_START,
        variable_end_string=_VARIABLE_END,
        # Neither can be opened: a template may not contain NUL.
        block_start_string="\x00{%",
        block_end_string="%}\x00",
        comment_start_string="\x00{#",
        comment_end_string="#}\x00",
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        cache_size=0,
    )
    # Only cheap, side-effect-free filters; `range` stays for its sandboxed size bound.
    environment.filters = {
        name: environment.filters[name] for name in ("abs", "int", "lower", "upper", "string", "trim", "length")
    }
    environment.globals = {"range": environment.globals["range"]}
    return environment


_ENVIRONMENT = _make_environment()


def _undefined_problem(template: str, error: jinja2.UndefinedError) -> str:
    unknown = _first_unknown_reference(template)
    if unknown is None:
        return f"uses an undefined value ({error.message})"
    return f"uses the unknown variable {unknown}"


def _first_unknown_reference(template: str) -> str | None:
    for part in split_template(template):
        if isinstance(part, str):
            continue
        try:
            tree = _ENVIRONMENT.parse(f"{_VARIABLE_START} {part.source} {_VARIABLE_END}")
        except (jinja2.TemplateSyntaxError, RecursionError):
            continue
        for node in tree.find_all((nodes.Getattr, nodes.Name)):
            dotted = _dotted_name(node)
            if dotted is not None and not _is_known(dotted):
                return dotted
    return None


def _dotted_name(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return str(node.name)
    if isinstance(node, nodes.Getattr):
        base = _dotted_name(node.node)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def _is_known(dotted: str) -> bool:
    return any(
        dotted == known or known.startswith(dotted + ".") or dotted.startswith(known + ".") for known in KNOWN_VARIABLES
    )


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."
