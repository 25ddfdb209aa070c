"""Atomic file writes: a temporary file in the same folder, fsync, then a rename over the target."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

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


def read_bounded(descriptor: int, size: int, limit: int) -> bytes:
    """Read an open regular file to its end, or `limit + 1` bytes if it contains more than `limit`.

    The first read requests `size` (as fstat reported it) plus one byte, and fewer bytes than
    requested are taken as the end of the file, so a file that did not grow takes one read.
    NOTE: a file system that cut a read short before the end would truncate the file here.
    """
    expected = min(size, limit)
    raw = os.read(descriptor, expected + 1)
    if len(raw) <= expected:
        return raw

    # The file grew since fstat, or reports no size: read on up to the limit.
    chunks = [raw]
    total = len(raw)
    while total <= limit:
        chunk = os.read(descriptor, limit + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
