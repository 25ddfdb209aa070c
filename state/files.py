"""Atomic file writes: a temporary file in the same folder, fsync, then a rename over the target."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO

from state.locking import FILE_MODE

__all__ = ["FILE_MODE", "fsync_directory", "read_bounded", "write_file_atomically"]


def write_file_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old or the new content, never a mix."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_bounded(handle: BinaryIO, limit: int) -> bytes:
    """Read the open file to its end, or `limit + 1` bytes if it holds more than `limit`.

    The first read asks for the size fstat reports, plus one byte to see the end: asking for
    `limit + 1` bytes at once would make Python allocate that much for every small file.
    Files that report no size (as in /proc) or grew since are read on up to the limit.
    """
    expected = min(os.fstat(handle.fileno()).st_size, limit)
    raw = handle.read(expected + 1)
    if len(raw) <= expected:
        return raw
    return raw + handle.read(limit + 1 - len(raw))
