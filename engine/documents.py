"""Load YAML configuration files into plain data, keeping the line and column of every field.

The composer comes from libyaml when PyYAML was built with it. Values are built from the node
tree here rather than by PyYAML's constructor so that duplicate keys are reported (PyYAML keeps
the last one silently) and every field path can be traced back to its position in the file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from engine.errors import ConfigIssue


class _TagResolver(Resolver):
    """PyYAML's SafeLoader resolver, resolving the text of each plain scalar once per process."""

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        # Without path resolvers, a tag depends on the node's kind and, for a plain scalar, on its
        # text alone. Most texts (keys, backends, regions) repeat across files.
        if not self.yaml_path_resolvers:
            if kind is ScalarNode:
                return _plain_scalar_tag(value) if implicit[0] else self.DEFAULT_SCALAR_TAG
            if kind is MappingNode:
                return self.DEFAULT_MAPPING_TAG
            if kind is SequenceNode:
                return self.DEFAULT_SEQUENCE_TAG
        return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]


_SAFE_RESOLVER = Resolver()


@functools.lru_cache(maxsize=65536)
def _plain_scalar_tag(value: str) -> str:
    return str(_SAFE_RESOLVER.resolve(ScalarNode, value, (True, False)))  # type: ignore[no-untyped-call]


class _PythonComposer(Reader, Scanner, Parser, Composer, _TagResolver):
    """PyYAML's pure-Python parser and composer with SafeLoader's tags."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _TagResolver.__init__(self)


_Composer: type[_PythonComposer] = _PythonComposer
try:
    from yaml._yaml import CParser

    class _LibyamlComposer(CParser, _TagResolver):
        """libyaml's parser and composer with SafeLoader's tags. _Builder builds the values."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _TagResolver.__init__(self)

    _Composer = _LibyamlComposer  # type: ignore[assignment]
except ImportError:  # PyYAML built without libyaml
    pass


MAX_FILE_BYTES = 10 * 1024 * 1024
# Aliases may point at the same node many times; this bounds the expanded size of a document.
MAX_NODES = 200_000

FieldPath = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"
_FLATTENED_KEY_TAGS = frozenset({"tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"})


@dataclass
class Document:
    """A parsed file: its data and the position of each field path (1-based line and column)."""

    path: str
    data: Any
    positions: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: FieldPath, *, key: bool = False) -> tuple[int | None, int | None]:
        """Return the position of `path`, or of its nearest ancestor that has one."""
        table = self.key_positions if key else self.positions
        probe = tuple(path)
        while True:
            if probe in table:
                return table[probe]
            if not probe:
                return (None, None)
            probe = probe[:-1]

    def issue(
        self,
        path: FieldPath,
        problem: str,
        *,
        value: object = None,
        fix: str = "",
        key: bool = False,
        show_value: bool = True,
    ) -> ConfigIssue:
        line, column = self.position(path, key=key)
        return ConfigIssue(
            file=self.path,
            line=line,
            column=column,
            field=format_field_path(path),
            value=describe_value(value) if show_value else None,
            problem=problem,
            fix=fix,
        )


def format_field_path(path: FieldPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def describe_value(value: object) -> str:
    """Show a value as the user wrote it, in YAML terms, shortened when long."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 80 else value[:77] + "..."
        return '"' + shown.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return str(value)


class _Builder:
    def __init__(self, path: str) -> None:
        self.path = path
        self._constructor: SafeConstructor | None = None
        self.positions: dict[FieldPath, tuple[int, int]] = {}
        self.key_positions: dict[FieldPath, tuple[int, int]] = {}
        self.issues: list[ConfigIssue] = []
        self.nodes_built = 0

    def build(self, node: Node, at: FieldPath) -> Any:
        self.nodes_built += 1
        if self.nodes_built > MAX_NODES:
            raise _TooLarge()
        self.positions[at] = (node.start_mark.line + 1, node.start_mark.column + 1)

        if isinstance(node, ScalarNode):
            return self.construct_scalar(node)
        if isinstance(node, SequenceNode):
            return [self.build(item, at + (index,)) for index, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self.build_mapping(node, at)
        raise _Unsupported(node)

    @property
    def constructor(self) -> SafeConstructor:
        # Made on first use: most files have no scalar that needs PyYAML's constructor.
        if self._constructor is None:
            self._constructor = SafeConstructor()
        return self._constructor

    def build_mapping(self, node: MappingNode, at: FieldPath) -> dict[Any, Any]:
        if self.check_keys(node, at):
            self.constructor.flatten_mapping(node)

        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_scalar(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise _Unsupported(key_node)
            child = at + (str(key),)
            self.key_positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = self.build(value_node, child)
        return result

    def construct_scalar(self, node: ScalarNode) -> Any:
        # Most values are plain strings, whose value is the node's text: skipping the
        # constructor's bookkeeping for them halves the cost of building a document.
        if node.tag == _STR_TAG:
            return node.value
        # PyYAML's constructors fail in several ways on a tag that does not fit its value, such
        # as AttributeError for `!!timestamp volume`. Each means the same to the user.
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError, TypeError, AttributeError, OverflowError) as error:
            raise _BadScalar(node, error) from None

    def check_keys(self, node: MappingNode, at: FieldPath) -> bool:
        """Report duplicate keys, and return True when a merge (`<<`) or value (`=`) key needs flattening.

        Flattening rewrites only those keys, so a mapping without them skips PyYAML's pass.
        """
        seen: dict[str, int] = {}
        needs_flattening = False
        for key_node, _ in node.value:
            if key_node.tag in _FLATTENED_KEY_TAGS:
                needs_flattening = True
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                self.issues.append(
                    ConfigIssue(
                        file=self.path,
                        line=line,
                        column=key_node.start_mark.column + 1,
                        field=format_field_path(at + (key,)),
                        value=None,
                        problem=f"is a duplicate key (first defined on line {seen[key]})",
                        fix="Keep one of the two; YAML parsers disagree on which one wins.",
                    )
                )
            else:
                seen[key] = line
        return needs_flattening


class _TooLarge(Exception):
    pass


class _BadScalar(Exception):
    def __init__(self, node: ScalarNode, error: Exception) -> None:
        super().__init__()
        self.node = node
        self.error = error


class _Unsupported(Exception):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node


def compose(text: str, composer_class: type[_PythonComposer] | None = None) -> Node | None:
    """Parse one YAML document into its node tree, with the tags yaml.safe_load gives, or None when empty.

    The composer is libyaml's when PyYAML was built with it; `composer_class` picks another.
    """
    composer = (composer_class or _Composer)(text)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()


def load_document(path: str, text: bytes | str) -> tuple[Document | None, list[ConfigIssue]]:
    """Parse one file. Returns the document (None when it cannot be used) and its issues."""
    if len(text) > MAX_FILE_BYTES:
        return None, [_file_issue(path, f"is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MB limit")]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            problem = f"is not valid UTF-8 (invalid byte at offset {error.start})"
            return None, [_file_issue(path, problem, "Save the file as UTF-8.")]

    builder = _Builder(path)
    try:
        node = compose(text)
        if node is None:
            return None, [_file_issue(path, "is empty", "Add a configuration with a type: key.")]
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as error:
        return None, [_yaml_issue(path, error)]
    except yaml.YAMLError as error:
        return None, [_file_issue(path, f"is not valid YAML ({error})")]
    except _TooLarge:
        return None, [_file_issue(path, f"expands to more than {MAX_NODES} YAML nodes (aliases?)")]
    except _Unsupported as error:
        mark = error.node.start_mark
        issue = ConfigIssue(
            path, mark.line + 1, mark.column + 1, "", None, "uses a YAML key or tag volplan does not read"
        )
        return None, [issue]
    except _BadScalar as error:
        return None, [_scalar_issue(path, error)]
    except (ConstructorError, ValueError, RecursionError) as error:
        return None, [_file_issue(path, f"could not be read as YAML ({type(error).__name__})")]

    document = Document(path, data, builder.positions, builder.key_positions)
    return document, builder.issues


def _scalar_issue(path: str, error: _BadScalar) -> ConfigIssue:
    node = error.node
    mark = node.start_mark
    tag = node.tag.rsplit(":", 1)[-1]
    if isinstance(error.error, ConstructorError) and error.error.problem:
        reason = error.error.problem
    elif "digits" in str(error.error):
        reason = "a number with more digits than Python converts"
    else:
        reason = f"not a valid {tag}"
    return ConfigIssue(
        path,
        mark.line + 1,
        mark.column + 1,
        "",
        describe_value(node.value),
        f"has a value that cannot be read ({reason})",
        "Remove the tag or quote the value.",
    )


def _file_issue(path: str, problem: str, fix: str = "") -> ConfigIssue:
    return ConfigIssue(path, None, None, "", None, problem, fix)


def _yaml_issue(path: str, error: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = error.problem_mark or error.context_mark
    problem = error.problem or "is not valid YAML"
    if error.context and "expected a single document" in error.context:
        problem = "contains several YAML documents; dstack reads one document per file"
        return ConfigIssue(
            path,
            mark.line + 1 if mark else None,
            mark.column + 1 if mark else None,
            "",
            None,
            problem,
            "Split it into one file per configuration.",
        )
    if mark is None:
        return _file_issue(path, f"is not valid YAML: {problem}")
    fix = "Indent with spaces, not tabs." if "\\t" in problem or "tab" in problem else ""
    return ConfigIssue(path, mark.line + 1, mark.column + 1, "", None, f"is not valid YAML: {problem}", fix)
