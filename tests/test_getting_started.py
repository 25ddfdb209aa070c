"""Replay the transcript in docs/getting-started.md and compare what volplan prints today.

The page's ```yaml title="NAME" blocks are written into a fresh folder, and each `$ command` of
its ```console blocks is run there with bash, its stdout and stderr merged as a terminal shows
them. Ids, lineages, timestamps, durations and the temporary home folder are normalised on
both sides; runs of spaces are collapsed because table columns widen with durations.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
PAGE = REPOSITORY / "docs" / "getting-started.md"
# The home folder that the page's paths show.
PAGE_HOME = "/home/me"

_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_TITLE = re.compile(r'title="([^"]+)"')
_NORMALISE = [
    (re.compile(r"vol-[0-9a-f]{17}"), "vol-<id>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"), "<time>"),
    (re.compile(r"(after|in) [0-9m.]+s\b"), r"\1 <elapsed>"),
    (re.compile(r"\([0-9m.]+s\)"), "(<elapsed>)"),
    (re.compile(r" {2,}"), " "),
]


@dataclass
class Step:
    """One thing the page does: write a file, or run a command and expect its output."""

    line: int
    file: str | None = None
    content: str = ""
    command: str | None = None
    expected: str = ""


def read_steps(text: str) -> list[Step]:
    steps = []
    for block in _BLOCK.finditer(text):
        language, info, body = block.groups()
        line = text.count("\n", 0, block.start()) + 1
        title = _TITLE.search(info)
        if language == "yaml" and title:
            steps.append(Step(line, file=title.group(1), content=body))
        elif language == "console":
            steps.extend(_commands(body, line))
    return steps


def _commands(body: str, line: int) -> list[Step]:
    steps: list[Step] = []
    for offset, text in enumerate(body.splitlines(keepends=True), start=1):
        if text.startswith("$ "):
            steps.append(Step(line + offset, command=text[2:].strip()))
        elif steps:
            steps[-1].expected += text
    return steps


def normalise(text: str, home: Path) -> str:
    text = text.replace(str(home), PAGE_HOME)
    for pattern, replacement in _NORMALISE:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def make_shim(folder: Path) -> Path:
    """A `volplan` on PATH that runs this repository's code with the test's Python."""
    folder.mkdir()
    shim = folder / "volplan"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m engine "$@"\n')
    shim.chmod(0o755)
    return folder


def test_getting_started_transcript(tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = home / "demo"
    demo.mkdir(parents=True)
    environment = {
        "PATH": f"{make_shim(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),
        "PYTHONPATH": str(REPOSITORY),
        "PYTHONUNBUFFERED": "1",
        "VOLPLAN_LOCAL_ROOT": str(home / ".local/share/volplan/local"),
        "LC_ALL": "C.UTF-8",
    }
    steps = read_steps(PAGE.read_text())
    assert sum(1 for step in steps if step.command) >= 10

    for step in steps:
        if step.file is not None:
            (demo / step.file).write_text(step.content)
            continue
        assert step.command is not None
        result = subprocess.run(
            ["bash", "-c", step.command],
            cwd=demo,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        expected = normalise(step.expected, home)
        actual = normalise(result.stdout, home)
        assert actual == expected, f"docs/getting-started.md:{step.line}: $ {step.command}"
