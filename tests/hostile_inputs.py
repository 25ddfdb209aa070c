"""Fuzz targets for hostile input: strategies, a sandbox project and the checks every case passes.

Each target draws one input with hypothesis, feeds it to volplan, and checks the outcome. It
must be the project's own error or a success, with exit code 0, 1 or 2 and no traceback or
internal-error banner. An error names the file, and the line where the input has lines. The
state file stays byte-identical unless a command that writes it succeeded on a valid state. `tests/test_fuzz.py` runs
every target with a small budget; `scripts/fuzz.py` runs them with a large one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import strategies as st

from engine.cli import cli
from engine.config import parse_configuration
from engine.documents import load_document
from engine.errors import ConfigIssue, StateError
from engine.mounts import InstanceMount, NetworkMount
from engine.run_config import RunConfiguration
from engine.templates import MAX_SEQUENCE_LENGTH, TemplateError, render_volume_name
from engine.units import UnitError, parse_duration, parse_size_gb
from engine.volume_config import is_volume_name
from state.model import parse_state

STATE_FILE = "volplan.state.json"
CONFIG_FILE = "fuzz.dstack.yml"
SEED_FILES = {
    "data.dstack.yml": "type: volume\nname: data\nbackend: aws\nregion: eu-central-1\nsize: 10GB\n",
    "logs.dstack.yml": "type: volume\nname: logs\nbackend: gcp\nregion: europe-west4\nsize: 20\ntags: {team: ml}\n",
}
# Issues that concern a whole file have no line: the file cannot be read or parsed at all.
FILE_LEVEL_PROBLEMS = (
    "is empty",
    "is not valid UTF-8",
    "is larger than",
    "is not valid YAML (",
    "could not be read as YAML",
    "expands to more than",
    "cannot be read",
    "is not a regular file",
    "is a symbolic link",
    "is a loop of symbolic links",
)
INTERNAL_ERROR = "internal error"


class FuzzFailure(AssertionError):
    """An outcome that breaks one of the rules every hostile input must keep."""


@dataclass
class Outcome:
    """What one example did, for the fuzz report."""

    exit_code: int
    state_changed: bool = False


@dataclass
class Tally:
    """Counts of one target's outcomes."""

    examples: int = 0
    exit_codes: Counter[int] = field(default_factory=Counter)
    state_changes: int = 0
    slowest: float = 0.0

    def add(self, outcome: Outcome, seconds: float) -> None:
        self.examples += 1
        self.exit_codes[outcome.exit_code] += 1
        self.state_changes += outcome.state_changed
        self.slowest = max(self.slowest, seconds)


# Strategies

_HOSTILE_TEXT = st.sampled_from(
    [
        "",
        "..",
        "../..",
        "/",
        "~",
        "~/data",
        "-",
        "--",
        "\t",
        "\n",
        "\x00",
        "\x7f",
        "\u202e",
        "\ufeff",
        "é",
        "x" * 5000,
        "${{ dstack.node_rank }}",
        "$<< ''.__class__ >>",
        "vol-0123456789abcdef0",
        "vol-../../etc",
        "1h30m",
        "-1",
        "1e400",
        ".nan",
        "s3://bucket/key",
        "*alias",
        "&anchor",
        "!!python/object:os.system",
        "{a: 1}",
        "[1, 2",
    ]
)
HOSTILE_STRINGS = _HOSTILE_TEXT | st.text(max_size=30) | st.text(min_size=1000, max_size=3000, alphabet="ab /:.")

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | HOSTILE_STRINGS
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(HOSTILE_STRINGS, children, max_size=4),
    max_leaves=12,
)

BASE_DOCUMENTS: list[dict[str, Any]] = [
    {"type": "volume", "name": "data", "backend": "aws", "region": "eu-central-1", "size": "100GB"},
    {"type": "volume", "name": "shared", "backend": "aws", "region": "us-east-1", "volume_id": "vol-0123456789abcdef0"},
    {"type": "volume", "name": "claim", "backend": "kubernetes", "claim_name": "my-claim"},
    {
        "type": "task",
        "nodes": 2,
        "commands": ["python train.py"],
        "volumes": ["data-${{ dstack.node_rank }}:/data", {"instance_path": "/mnt/cache", "path": "/cache"}],
    },
    {"type": "service", "port": 8000, "commands": ["serve"], "replicas": "1..2", "volumes": ["data:/data"]},
    {"type": "dev-environment", "ide": "vscode", "volumes": [{"name": ["a-eu", "a-us"], "path": "/data"}]},
    {"providers": {"aws": {"kind": "local"}}, "moved": [{"from": "volume.a", "to": "volume.b"}], "protect": ["x"]},
]


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A configuration with keys replaced by wrong types, removed or added."""
    document = json.loads(json.dumps(draw(st.sampled_from(BASE_DOCUMENTS))))
    for _ in range(draw(st.integers(0, 4))):
        keys = sorted(document)
        operation = draw(st.sampled_from(["replace", "delete", "add", "nest"]))
        if operation == "replace" and keys:
            document[draw(st.sampled_from(keys))] = draw(VALUES)
        elif operation == "delete" and keys:
            del document[draw(st.sampled_from(keys))]
        elif operation == "add":
            document[draw(HOSTILE_STRINGS | st.sampled_from(["size", "nodes", "groups", "type"]))] = draw(VALUES)
        elif operation == "nest" and keys:
            key = draw(st.sampled_from(keys))
            document[key] = _nest(document[key], draw(st.integers(1, 200)))
    return document


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def _alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _merge_bomb(levels: int) -> str:
    lines = ["m0: &m0 {k: 1}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


_TEXT_MUTATIONS = [
    "none",
    "tab",
    "binary",
    "latin-1",
    "utf-16",
    "truncate",
    "duplicate-line",
    "documents",
    "alias-bomb",
    "merge-bomb",
    "deep",
    "huge-string",
    "bom",
    "tags",
    "empty",
]


@st.composite
def mutated_yaml(draw: st.DrawFn) -> bytes:
    """A YAML file: a mutated configuration, dumped, then damaged as text."""
    text = yaml.safe_dump(draw(mutated_documents()), sort_keys=False, allow_unicode=True)
    for mutation in draw(st.lists(st.sampled_from(_TEXT_MUTATIONS), min_size=1, max_size=3)):
        text = _mutate_text(draw, text, mutation)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "utf-16"]))
    raw = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at:]
    return raw


def _mutate_text(draw: st.DrawFn, text: str, mutation: str) -> str:
    lines = text.splitlines(keepends=True) or [""]
    line = draw(st.integers(0, len(lines) - 1))
    if mutation == "tab":
        lines[line] = "\t" + lines[line]
    elif mutation in ("binary", "latin-1", "utf-16"):
        lines[line] += "".join(chr(code) for code in draw(st.lists(st.integers(0, 0x2FF), max_size=6)))
    elif mutation == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    elif mutation == "duplicate-line":
        lines.insert(line, lines[line])
    elif mutation == "documents":
        return text + "---\n" + text
    elif mutation == "alias-bomb":
        return _alias_bomb(draw(st.integers(2, 9))) + text
    elif mutation == "merge-bomb":
        return _merge_bomb(draw(st.integers(2, 40))) + text
    elif mutation == "deep":
        depth = draw(st.integers(10, 3000))
        return text + "deep: " + "[" * depth + "]" * depth + "\n"
    elif mutation == "huge-string":
        return text + "name: " + "x" * draw(st.integers(1000, 200_000)) + "\n"
    elif mutation == "bom":
        return "\ufeff" + text
    elif mutation == "tags":
        tag = draw(st.sampled_from(["!!binary", "!!set", "!!timestamp", "!!python/name:os.system", "!custom", "!!str"]))
        lines[line] = lines[line].replace(": ", f": {tag} ", 1)
    elif mutation == "empty":
        return draw(st.sampled_from(["", "\n", "---\n", "...\n", "~\n", "# comment only\n"]))
    return "".join(lines)


_MOUNT_PIECES = st.sampled_from(
    ["/", "//", ":", ".", "..", "~", "data", "mnt", "-", " ", "\t", "\\", "\x00", "$", "${{", "}}", "$<<", ">>"]
    + ["dstack.node_rank", "workflow", "é", "\n"]
)
MOUNT_STRINGS = st.lists(_MOUNT_PIECES, max_size=10).map("".join) | HOSTILE_STRINGS
MOUNT_ENTRIES = (
    MOUNT_STRINGS
    | st.fixed_dictionaries({"name": MOUNT_STRINGS | VALUES, "path": MOUNT_STRINGS | VALUES})
    | st.fixed_dictionaries(
        {"instance_path": MOUNT_STRINGS | VALUES, "path": MOUNT_STRINGS},
        optional={"optional": VALUES, "name": MOUNT_STRINGS, "extra": VALUES},
    )
    | VALUES
)

_SIZE_PIECES = st.sampled_from(
    ["0", "1", "9", "10", ".", "5", "e", "E", "-", "+", " ", "_", "GB", "gb", "MB", "TB", "PB", "B", "inf", "nan"]
    + ["١٠", "\u00a0", "\t", "0x", "1_000"]
)
SIZE_VALUES = st.lists(_SIZE_PIECES, max_size=8).map("".join) | SCALARS | VALUES

_TEMPLATE_ATOMS = st.sampled_from(
    [
        "dstack.node_rank",
        "dstack.job_num",
        "dstack",
        "1",
        "10**9",
        "2**4096",
        "99999",
        "'x'",
        "''",
        "'\\t'",
        "'%s'",
        "'{0}'",
        "self",
        "cycler",
        "joiner",
        "namespace",
        "lipsum",
        "range",
        "config",
        "request",
        "dict",
        "loop",
        "[1, 2]",
        "(1, 2)",
        "{'a': 1}",
        "none",
        "true",
    ]
)
_TEMPLATE_SUFFIXES = st.sampled_from(
    [
        ".__class__",
        ".__mro__",
        ".__subclasses__()",
        ".__globals__",
        ".__init__",
        ".__dict__",
        "._TemplateReference__context",
        ".format(1)",
        ".format_map({})",
        ".replace('x', 'x' * 1000)",
        ".replace('', 'yy')",
        ".expandtabs(99999)",
        ".ljust(99999)",
        ".center(100001)",
        ".join('ab' * 50)",
        ".split('')",
        ".upper()",
        ".mro()",
        "()",
        "(10**9)",
        "(99999)",
        "[0]",
        "['__class__']",
        "|length",
        "|string",
        "|int",
        "|attr('__class__')",
        "|format(1)",
        "|join",
        "|map('upper')|list",
        "|list",
    ]
)
_TEMPLATE_OPERATORS = st.sampled_from([" + ", " - ", " * ", " ** ", " // ", " % ", " ~ ", " == ", " if 1 else "])


@st.composite
def template_expressions(draw: st.DrawFn, depth: int = 0) -> str:
    """A jinja2 expression built from sandbox attacks, operators, filters and calls."""
    if depth < 3 and draw(st.booleans()):
        left = draw(template_expressions(depth + 1))
        right = draw(template_expressions(depth + 1))
        return f"({left}{draw(_TEMPLATE_OPERATORS)}{right})"
    atom = draw(_TEMPLATE_ATOMS)
    return atom + "".join(draw(st.lists(_TEMPLATE_SUFFIXES, max_size=3)))


@st.composite
def templates(draw: st.DrawFn) -> str:
    opening, closing = draw(st.sampled_from([("${{", "}}"), ("$<<", ">>")]))
    prefix = draw(st.sampled_from(["", "data-", "$$", "a"]))
    expression = draw(template_expressions())
    suffix = draw(st.sampled_from(["", "-x", "$", " }}", "${{"]))
    return f"{prefix}{opening} {expression} {closing}{suffix}"


TEMPLATES = templates() | st.lists(_MOUNT_PIECES | _TEMPLATE_SUFFIXES | _TEMPLATE_ATOMS, max_size=8).map("".join)


STATE_COMMANDS: list[list[str]] = [
    ["plan"],
    ["plan", "--json"],
    ["plan", "--detailed-exitcode", "--refresh=false"],
    ["apply", "-y"],
    ["destroy", "-y"],
    ["delete", "-f", "data.dstack.yml", "-y"],
    ["refresh", "-y"],
    ["drift"],
    ["volume", "list", "-v"],
    ["volume", "get", "data", "--json"],
    ["volume", "delete", "logs", "-y"],
    ["force-unlock", "0123"],
]


@dataclass(frozen=True)
class StateDamage:
    """One way to damage the seed state file."""

    kind: str
    argument: Any = None
    command: tuple[str, ...] = ("plan",)


_STATE_PATHS = st.sampled_from(
    ["version", "lineage", "serial", "resources", "resources.0", "resources.0.address", "resources.0.id"]
    + ["resources.0.kind", "resources.0.size_gb", "resources.0.external", "resources.0.provider"]
    + ["resources.1.backend", "resources.1.tags", "resources.1.name", "resources.0.region"]
)
STATE_DAMAGES = st.builds(
    StateDamage,
    kind=st.sampled_from(
        ["truncate", "replace", "delete", "duplicate", "version", "bytes", "non-utf8", "symlink", "folder", "none"]
    ),
    argument=st.tuples(_STATE_PATHS, VALUES, st.integers(0, 10**6), st.binary(max_size=16)),
    command=st.sampled_from(STATE_COMMANDS).map(tuple),
)

_CLI_COMMANDS = st.sampled_from(
    ["plan", "apply", "destroy", "delete", "validate", "drift", "refresh", "volume", "force-unlock", "bogus", ""]
)
_CLI_SUBCOMMANDS = st.sampled_from(["list", "get", "delete", "data", ""])
_CLI_VALUES = st.sampled_from(
    ["", "..", "../..", ".", "data.dstack.yml", "missing.yml", "sub", "data", "logs", "x" * 300, "-", "--"]
    + ["1h30m", "-1", "0", "1", "999999999999", "5m", "off", "true", "maybe", "aws=local", "aws", "=local"]
    + ["aws=evil", "s3://bucket/key", "plan.out", "/", "é", "\t", "vol-x"]
)
# -C takes a folder to walk: never one outside the sandbox (`/` would walk the whole disk).
_CLI_FOLDERS = st.sampled_from(["project", "sub", "missing", ".", "project/data.dstack.yml", "project/sub"])
_CLI_OPTIONS = st.sampled_from(
    ["-f", "--file", "-n", "--name", "--out", "-out", "--state", "--provider", "-C", "--lock-timeout"]
    + ["-lock-timeout", "-parallelism", "--parallelism", "-target", "-replace", "-refresh", "-input", "--refresh"]
)
_CLI_FLAGS = st.sampled_from(
    ["-y", "--yes", "--auto-approve", "-auto-approve", "--json", "--detailed-exitcode", "-detailed-exitcode"]
    + ["--no-color", "-v", "-vv", "--allow-replace", "--help", "--version", "-h", "-x", "--", "-no-color"]
)


@st.composite
def cli_arguments(draw: st.DrawFn) -> list[str]:
    """A command line mixing commands, options, values and stray words in any order."""
    args = [draw(_CLI_COMMANDS)]
    if args[0] == "volume":
        args.append(draw(_CLI_SUBCOMMANDS))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["option", "option=", "flag", "word"]))
        option = draw(_CLI_OPTIONS)
        value = draw(_CLI_FOLDERS if option == "-C" else _CLI_VALUES)
        if kind == "option":
            args += [option, value]
        elif kind == "option=":
            args.append(f"{option}={value}")
        elif kind == "flag":
            args.append(draw(_CLI_FLAGS))
        else:
            args.append(draw(_CLI_VALUES))
    if draw(st.booleans()):
        draw(st.randoms()).shuffle(args)
    return [arg for arg in args if arg != "" or draw(st.booleans())]


# The sandbox


class Sandbox:
    """A project with two applied volumes, a state file and a local provider root, in a temp folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.project = folder / "project"
        self.local_root = folder / "local-root"
        self.state = self.project / STATE_FILE
        self.runner = CliRunner()
        self._seed()

    def _seed(self) -> None:
        for path in (self.project, self.local_root):
            shutil.rmtree(path, ignore_errors=True)
        self.project.mkdir(parents=True)
        for name, text in SEED_FILES.items():
            (self.project / name).write_text(text)
        (self.project / "sub").mkdir()
        result = self.invoke(["apply", "-y"])
        if result.exit_code != 0:
            raise RuntimeError(f"seeding the fuzz sandbox failed: {result.output}")
        self.seed_state = self.state.read_bytes()
        self.seed_files = self.snapshot()

    def env(self) -> dict[str, str]:
        return {"VOLPLAN_LOCAL_ROOT": str(self.local_root), "NO_COLOR": "1"}

    def invoke(self, args: list[str]) -> Any:
        with working_directory(self.folder):
            return self.runner.invoke(cli, ["-C", str(self.project), *args], env=self.env(), catch_exceptions=True)

    def snapshot(self) -> dict[str, bytes | str]:
        """Every entry of the project folder: file bytes, or a link's target, or a folder marker."""
        entries: dict[str, bytes | str] = {}
        for path in sorted(self.project.rglob("*")):
            relative = path.relative_to(self.project).as_posix()
            if path.is_symlink():
                entries[relative] = "link:" + os.readlink(path)
            elif path.is_dir():
                entries[relative] = "folder"
            elif path.is_file():
                entries[relative] = path.read_bytes()
        return entries

    def reset(self) -> None:
        """Put the seed back when an example changed something it was allowed to change."""
        if self.snapshot() != self.seed_files:
            self._seed()


@contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run relative --state and --out paths inside the sandbox, never in the repository."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    with tempfile.TemporaryDirectory(prefix="volplan-fuzz-") as folder:
        yield Sandbox(Path(folder))


# Checks


def check_cli_result(result: Any, args: list[str]) -> None:
    """The rules for any command line: exit 0, 1 or 2, no traceback, errors start with 'Error:'."""
    shown = f"volplan {' '.join(args)!r}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise FuzzFailure(f"{shown} raised {type(result.exception).__name__}: {result.exception}")
    if result.exit_code not in (0, 1, 2):
        raise FuzzFailure(f"{shown} exited {result.exit_code}: {result.output[-500:]}")
    if "Traceback" in result.output or INTERNAL_ERROR in result.output:
        raise FuzzFailure(f"{shown} hit an internal error: {result.output[-800:]}")
    if result.exit_code == 1 and "Error:" not in result.stderr:
        raise FuzzFailure(f"{shown} exited 1 without an error message: {result.output[-500:]}")


def check_issue_located(issue: ConfigIssue, file: str) -> None:
    if issue.file != file:
        raise FuzzFailure(f"issue names {issue.file!r}, not {file!r}: {issue.format()}")
    if issue.line is None and not any(text in issue.problem for text in FILE_LEVEL_PROBLEMS):
        raise FuzzFailure(f"issue has no line: {issue.format()}")


def check_document(raw: bytes, file: str = CONFIG_FILE) -> RunConfiguration | object | None:
    """Load and check one file in the engine; every issue must name the file and, where it can, a line."""
    document, issues = load_document(file, raw)
    config = None
    if document is not None:
        config, config_issues = parse_configuration(document)
        issues = issues + config_issues
    for issue in issues:
        check_issue_located(issue, file)
    return None if issues else config


# Targets


def yaml_target(box: Sandbox, raw: bytes, command: str) -> Outcome:
    """A damaged YAML file as a configuration (or as volplan.yml), through the CLI."""
    name = "volplan.yml" if raw.lstrip().startswith(b"providers") else CONFIG_FILE
    check_document(raw, name)
    before = box.snapshot()
    (box.project / name).write_bytes(raw)
    try:
        return _run_read_only(box, command.split())
    finally:
        (box.project / name).unlink(missing_ok=True)
        if box.snapshot() != before:
            raise FuzzFailure(f"volplan {command} changed the project on a hostile {name}")


def mount_target(entry: Any) -> Outcome:
    """One `volumes:` entry of a task; a valid mount has a normalised absolute path."""
    document = {"type": "task", "nodes": 3, "commands": ["x"], "volumes": [entry]}
    raw = json.dumps(document, allow_nan=True).encode()
    config = check_document(raw)
    if not isinstance(config, RunConfiguration):
        return Outcome(1)
    for mount in config.mounts:
        _check_container_path(mount.path, entry)
        if isinstance(mount, InstanceMount):
            _check_container_path(mount.instance_path, entry)
        elif isinstance(mount, NetworkMount):
            for name in mount.names:
                for rank in config.node_ranks():
                    if not is_volume_name(render_volume_name(name, rank)):
                        raise FuzzFailure(f"mount {entry!r} accepted name {name!r}, invalid for rank {rank}")
    return Outcome(0)


def _check_container_path(path: str, entry: Any) -> None:
    parts = path.split("/")
    valid = path.startswith("/") and "\x00" not in path and ".." not in parts and (path == "/" or "" not in parts[1:])
    if not valid:
        raise FuzzFailure(f"mount {entry!r} accepted the path {path!r}")


def size_target(value: Any) -> Outcome:
    """A size and a duration in every form; also as a volume's size: in a file."""
    try:
        gigabytes = parse_size_gb(value)
    except UnitError:
        gigabytes = None
    if gigabytes is not None and (not isinstance(gigabytes, int) or gigabytes < 1):
        raise FuzzFailure(f"size {value!r} parsed to {gigabytes!r}")
    try:
        seconds = parse_duration(value)
    except UnitError:
        seconds = None
    if seconds is not None and not isinstance(seconds, int):
        raise FuzzFailure(f"duration {value!r} parsed to {seconds!r}")

    document = {"type": "volume", "name": "data", "backend": "aws", "region": "eu-central-1", "size": value}
    config = check_document(json.dumps(document, allow_nan=True).encode())
    return Outcome(0 if config is not None else 1)


def template_target(template: str) -> Outcome:
    """A volume name template rendered by the sandbox: a bounded string or a TemplateError."""
    try:
        rendered = render_volume_name(template, 3)
    except TemplateError:
        return Outcome(1)
    if not isinstance(rendered, str) or len(rendered) > MAX_SEQUENCE_LENGTH:
        raise FuzzFailure(f"template {template!r} rendered {len(rendered)} characters")
    for leaked in ("<class", "<function", "<built-in", "<module", "__"):
        if leaked in rendered and leaked not in template:
            raise FuzzFailure(f"template {template!r} rendered Python internals: {rendered[:200]!r}")
    return Outcome(0)


def state_target(box: Sandbox, damage: StateDamage) -> Outcome:
    """A damaged state file under a command; an error never changes it, success needs a valid state."""
    _damage_state(box, damage)
    before = box.snapshot()
    args = list(damage.command)
    result = box.invoke(args)
    check_cli_result(result, args)

    after = box.snapshot()
    changed = after.get(STATE_FILE) != before.get(STATE_FILE)
    if changed and result.exit_code != 0:
        raise FuzzFailure(f"volplan {' '.join(args)} failed but changed the state ({damage.kind})")
    if changed and not _valid_state(before.get(STATE_FILE)):
        raise FuzzFailure(f"volplan {' '.join(args)} wrote over a damaged state ({damage.kind})")
    if result.exit_code == 0 and not _valid_state(before.get(STATE_FILE)) and _reads_state(args):
        raise FuzzFailure(f"volplan {' '.join(args)} succeeded on a damaged state ({damage.kind}): {result.output}")
    box.reset()
    return Outcome(result.exit_code, changed)


def cli_target(box: Sandbox, args: list[str]) -> Outcome:
    """Any command line; a failing one changes no file of the project."""
    outcome = _run_read_only(box, args, allow_success_writes=True)
    box.reset()
    return outcome


def _run_read_only(box: Sandbox, args: list[str], *, allow_success_writes: bool = False) -> Outcome:
    before = box.snapshot()
    result = box.invoke(args)
    check_cli_result(result, args)
    after = box.snapshot()
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    changed.discard(STATE_FILE + ".lock")
    if changed and (result.exit_code != 0 or not allow_success_writes):
        raise FuzzFailure(f"volplan {' '.join(args)!r} exited {result.exit_code} and changed {sorted(changed)}")
    return Outcome(result.exit_code, STATE_FILE in changed)


def _damage_state(box: Sandbox, damage: StateDamage) -> None:
    path = box.state
    text = box.seed_state.decode()
    field_path, value, number, noise = damage.argument
    if damage.kind == "truncate":
        path.write_text(text[: number % (len(text) + 1)])
    elif damage.kind in ("replace", "delete", "duplicate", "version"):
        data = json.loads(text)
        _edit_json(data, damage.kind, field_path, value, number)
        path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")
    elif damage.kind == "bytes":
        at = number % (len(text) + 1)
        path.write_bytes(box.seed_state[:at] + noise + box.seed_state[at:])
    elif damage.kind == "non-utf8":
        path.write_bytes(box.seed_state.replace(b'"data"', b'"d\xe9ta"'))
    elif damage.kind == "symlink":
        path.unlink()
        target = box.folder / "elsewhere.json"
        target.write_bytes(box.seed_state)
        path.symlink_to(target)
    elif damage.kind == "folder":
        path.unlink()
        path.mkdir()


def _edit_json(data: Any, kind: str, field_path: str, value: Any, number: int) -> None:
    if kind == "version":
        data["version"] = [2, 99, 10**20, 0, -1, 1.5, "1", None][number % 8]
        return
    if kind == "duplicate":
        data["resources"].append(dict(data["resources"][number % len(data["resources"])]))
        return
    *parents, last = field_path.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(last) if isinstance(target, list) else last
    if kind == "delete":
        del target[key]
    else:
        target[key] = value


def _valid_state(raw: bytes | str | None) -> bool:
    if not isinstance(raw, bytes):
        return raw is None
    try:
        parse_state(raw.decode(), STATE_FILE)
    except (StateError, UnicodeDecodeError):
        return False
    return True


def _reads_state(args: list[str]) -> bool:
    return args[0] not in ("validate", "force-unlock")


# Running a target


def run_examples(
    strategy: st.SearchStrategy[Any], check: Callable[[Any], Outcome], examples: int, tally: Tally
) -> Callable[[], None]:
    """Return a hypothesis test that runs `check` on `examples` drawn inputs and counts them in `tally`."""
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(strategy)
    def run(value: Any) -> None:
        started = time.perf_counter()
        outcome = check(value)
        tally.add(outcome, time.perf_counter() - started)

    return run


def targets(box: Sandbox) -> dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], Outcome]]]:
    """Every fuzz target: its strategy and its check, by name."""
    return {
        "yaml": (
            st.tuples(mutated_yaml(), st.sampled_from(["validate", "plan", "plan --json"])),
            lambda drawn: yaml_target(box, drawn[0], drawn[1]),
        ),
        "mounts": (MOUNT_ENTRIES, mount_target),
        "sizes": (SIZE_VALUES, size_target),
        "templates": (TEMPLATES, template_target),
        "state": (STATE_DAMAGES, lambda damage: state_target(box, damage)),
        "cli": (cli_arguments(), lambda args: cli_target(box, args)),
    }
