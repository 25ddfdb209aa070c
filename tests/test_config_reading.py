"""Reading configuration files: bounded reads on descriptors, special files and descriptor use."""

from __future__ import annotations

import os
from pathlib import Path

from engine.project import _open_folder, load_project, read_config_bytes
from state.files import read_bounded


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_read_bounded_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "a.dstack.yml"
    path.write_bytes(b"type: volume\n")
    descriptor = os.open(path, os.O_RDONLY)
    try:
        assert read_bounded(descriptor, 13, 100) == b"type: volume\n"
    finally:
        os.close(descriptor)


def test_read_bounded_stops_past_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.dstack.yml"
    path.write_bytes(b"x" * 50)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        assert read_bounded(descriptor, 50, 10) == b"x" * 11
    finally:
        os.close(descriptor)


def test_read_bounded_grown_file(tmp_path: Path) -> None:
    # A size smaller than the content, as fstat reports for a file that grew after it was checked.
    path = tmp_path / "grown.dstack.yml"
    path.write_bytes(b"y" * 40)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        assert read_bounded(descriptor, 5, 100) == b"y" * 40
    finally:
        os.close(descriptor)


def test_read_bounded_unsized_pipe() -> None:
    # A pipe reports size 0, so the first read requests one byte and the rest is read up to the limit.
    reader, writer = os.pipe()
    os.write(writer, b"a" * 30)
    os.close(writer)
    try:
        assert read_bounded(reader, 0, 20) == b"a" * 21
    finally:
        os.close(reader)


def test_config_bytes_of_fifo_rejected(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f.dstack.yml")
    before = _open_descriptors()

    raw, issue = read_config_bytes(tmp_path, "f.dstack.yml")

    assert raw == b""
    assert issue is not None
    assert issue.problem == "is not a regular file"
    assert _open_descriptors() == before


def test_config_bytes_close_descriptor(tmp_path: Path) -> None:
    (tmp_path / "v.dstack.yml").write_text("type: volume\nname: v\n")
    before = _open_descriptors()

    raw, issue = read_config_bytes(tmp_path, "v.dstack.yml")

    assert issue is None
    assert raw == b"type: volume\nname: v\n"
    assert _open_descriptors() == before


def _make_project(root: Path) -> list[str]:
    """Write a file of each kind that reading treats differently, and return their names."""
    (root / "sub").mkdir()
    (root / "v.dstack.yml").write_text("type: volume\n")
    (root / "sub" / "w.dstack.yml").write_text("type: task\n")
    (root / "inside.dstack.yml").symlink_to(root / "v.dstack.yml")
    outside = root.parent / f"{root.name}-outside.yml"
    outside.write_text("type: volume\n")
    (root / "outside.dstack.yml").symlink_to(outside)
    (root / "loop.dstack.yml").symlink_to(root / "loop.dstack.yml")
    os.mkfifo(root / "fifo.dstack.yml")
    return ["v.dstack.yml", "sub/w.dstack.yml", "inside.dstack.yml", "outside.dstack.yml", "loop.dstack.yml",
            "fifo.dstack.yml", "missing.dstack.yml"]  # fmt: skip


def test_folder_descriptor_reads_alike(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    names = _make_project(root)
    folder = _open_folder(root)
    assert folder is not None

    try:
        for name in names:
            assert read_config_bytes(root, name, folder) == read_config_bytes(root, name), name
    finally:
        os.close(folder)


def test_load_project_closes_folder(tmp_path: Path) -> None:
    (tmp_path / "v.dstack.yml").write_text("type: volume\nname: data\nbackend: aws\nregion: eu-west-1\nsize: 1GB\n")
    before = _open_descriptors()

    project = load_project(tmp_path)

    assert list(project.volumes) == ["volume.data"]
    assert _open_descriptors() == before
