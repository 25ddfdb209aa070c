"""Finding configuration files below the project folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.project import discover_files


def _touch(root: Path, name: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("type: volume\n")


def test_nested_files_listed_relative(tmp_path: Path) -> None:
    for name in (
        "b.dstack.yml",
        "a/.dstack.yml",
        "a/deep/er/c.dstack.yaml",
        "a/notes.yml",
        ".hidden/x.dstack.yml",
        "node_modules/y.dstack.yml",
        "a/node_modules/z.dstack.yml",
    ):
        _touch(tmp_path, name)

    found = discover_files(tmp_path)

    assert found == ["a/.dstack.yml", "a/deep/er/c.dstack.yaml", "b.dstack.yml"]


def test_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path, "sub/v.dstack.yml")
    _touch(tmp_path, "w.dstack.yml")
    monkeypatch.chdir(tmp_path)

    assert discover_files(Path(".")) == ["sub/v.dstack.yml", "w.dstack.yml"]
