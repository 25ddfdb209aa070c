"""Shared fixtures: a real project folder, a real local provider root, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import cli
from providers.local import LocalProvider
from tests.s3_server import aws_env, moto_endpoint, s3  # noqa: F401  (fixtures for the S3 state tests)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def local_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "local-root"
    monkeypatch.setenv("VOLPLAN_LOCAL_ROOT", str(root))
    return root


@pytest.fixture
def project(tmp_path: Path, local_root: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


@pytest.fixture
def provider(local_root: Path) -> LocalProvider:
    return LocalProvider(local_root)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def volume_file(
    folder: Path, name: str, *, size: str = "100GB", region: str = "eu-central-1", backend: str = "aws", extra: str = ""
) -> Path:
    body = f"type: volume\nname: {name}\nbackend: {backend}\nregion: {region}\nsize: {size}\n{extra}"
    return write(folder, f"{name}.dstack.yml", body)


def run(project: Path, *args: str, input: str | None = None) -> CliResult:
    """Run the CLI in-process on `project`, as a user would from that folder."""
    runner = CliRunner()
    result = runner.invoke(cli, ["-C", str(project), *args], input=input, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def run_process(
    project: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `volplan` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=project,
        env={**os.environ, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def no_tty_stdin() -> Iterator[None]:
    yield
