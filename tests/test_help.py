"""Help, version and shell completion: what a new user reads before running anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from engine import __version__
from engine.cli import cli
from tests.conftest import run, run_process


def every_command(
    group: click.Group = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Yield every command and group under `group`, with the words that invoke it."""
    yield path, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = list(every_command())


@pytest.mark.parametrize(("words", "command"), COMMANDS, ids=[" ".join(w) or "volplan" for w, _ in COMMANDS])
def test_help_has_purpose_options_and_example(words: tuple[str, ...], command: click.Command, project: Path) -> None:
    result = run(project, *words, "--help")

    assert result.exit_code == 0, result.output
    purpose = (command.help or "").strip().splitlines()[0]
    assert purpose.endswith("."), f"{words}: the first line states the purpose in a sentence"
    assert purpose in " ".join(result.stdout.split())
    assert "Example:" in result.stdout
    example = result.stdout.split("Example:", 1)[1].strip().splitlines()[0].strip()
    assert example.startswith("volplan"), f"{words}: the example is a command line"
    for parameter in command.params:
        if not isinstance(parameter, click.Option) or parameter.name == "help":
            continue
        assert parameter.help, f"{words}: {parameter.opts} has no help"
        parent = click.Context(cli, info_name="volplan", **cli.context_settings)
        record = parameter.get_help_record(
            click.Context(command, parent=parent, info_name=words[-1] if words else None)
        )
        assert record is not None
        if not parameter.is_flag and not parameter.count and parameter.default not in (None, ()):
            assert "default:" in record[1], f"{words}: {parameter.opts} does not show its default"


def test_command_list_keeps_whole_sentences(project: Path) -> None:
    result = run(project, "--help")

    assert "..." not in result.stdout.split("Commands:", 1)[1]


def test_version(project: Path) -> None:
    result = run(project, "--version")

    assert result.exit_code == 0
    assert result.stdout == f"volplan, version {__version__}\n"


def test_bash_completion_script(project: Path) -> None:
    result = run_process(project, env={"_VOLPLAN_COMPLETE": "bash_source"})

    assert result.returncode == 0, result.stderr
    assert "_volplan_completion()" in result.stdout
    assert "complete -o nosort -F _volplan_completion volplan" in result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("volplan gr", ["plain,graph"]),
        ("volplan apply --para", ["plain,--parallelism"]),
        ("volplan graph --format ", ["plain,dot", "plain,mermaid"]),
    ],
)
def test_bash_completion_answers(project: Path, words: str, expected: list[str]) -> None:
    environment = {
        "_VOLPLAN_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }

    result = run_process(project, env=environment)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_empty_folder_says_where_it_looked(project: Path, local_root: Path) -> None:
    result = run(project, "plan")

    assert result.exit_code == 0
    assert f"No configuration files and no state in {project}" in result.stdout
    assert "pass -C DIR" in result.stdout


@pytest.mark.parametrize(("words", "command"), COMMANDS[1:], ids=[" ".join(w) for w, _ in COMMANDS[1:]])
def test_command_page_lists_every_option(words: tuple[str, ...], command: click.Command) -> None:
    page = Path(__file__).resolve().parent.parent / "docs" / "commands" / f"{'-'.join(words)}.md"

    assert page.is_file(), f"{page} is missing"
    text = page.read_text()
    assert text.startswith(f"# volplan {' '.join(words)}\n")
    for parameter in command.params:
        if isinstance(parameter, click.Option) and parameter.name != "help":
            long_names = [name for name in parameter.opts if name.startswith("--")]
            assert any(f"`{name}" in text for name in long_names), f"{page.name} does not describe {parameter.opts}"
