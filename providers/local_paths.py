"""Paths inside the local provider's data root, checked so that no link leads out of it.

The local provider follows only the symbolic links that it made and recorded itself. Every path
it opens below its root goes through `path_inside_root`, which walks the path one component at a
time and rejects `..`, absolute parts, NUL characters and any symbolic link that is not recorded
with the target it was made with. Code that makes links (run nodes, whose mounts are links to
volume folders) records each link and passes the records here, so the same check covers them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from engine.errors import ProviderError

# A recorded link: its path relative to the root, mapped to the target it was created with.
RecordedLinks = Mapping[PurePosixPath, str]

_NO_LINKS: RecordedLinks = {}
# Recorded links may lead to folders that hold recorded links; this bounds the chain.
MAX_LINK_HOPS = 8


def path_inside_root(root: Path, relative: str | PurePosixPath, recorded: RecordedLinks = _NO_LINKS) -> Path:
    """Return `root / relative` after checking that it stays inside `root`.

    Components that do not exist yet are allowed (the caller may be about to create them). An
    existing component that is a symbolic link is followed only when `recorded` holds it with
    the target it points to now, and the target is inside the root too.

    NOTE: the check and the caller's use of the path are separate system calls, so a process
    that can write inside the root could swap a folder for a link between them. The root is
    the user's own folder; this check stops links planted there beforehand.
    """
    parts = _checked_parts(root, relative)
    _walk(root, parts, recorded, hops=0)
    return root.joinpath(*parts)


def _checked_parts(root: Path, relative: str | PurePosixPath) -> tuple[str, ...]:
    text = str(relative)
    parts = PurePosixPath(text).parts
    invalid = (
        not parts
        or "\x00" in text
        or PurePosixPath(text).is_absolute()
        or any(part in (".", "..") for part in parts)
        or "\\" in text
    )
    if invalid:
        raise ProviderError(
            "Invalid local path",
            f"{text!r} is not a path inside the local provider's root {root}: "
            "it must be relative, without '..', '\\' or NUL characters.",
        )
    return parts


def _walk(root: Path, parts: tuple[str, ...], recorded: RecordedLinks, hops: int) -> None:
    current = root
    for index, part in enumerate(parts):
        current = current / part
        if not os.path.lexists(current):
            return
        if not os.path.islink(current):
            continue

        link = PurePosixPath(*parts[: index + 1])
        target = os.readlink(current)
        if recorded.get(link) != target:
            raise ProviderError(
                "Unexpected symbolic link",
                f"{current} is a symbolic link the local provider did not make (it points to {target}). "
                "Remove it; the local provider never follows links it did not record.",
            )
        _follow(root, current, link, parts[index + 1 :], recorded, hops)
        return


def _follow(
    root: Path, current: Path, link: PurePosixPath, rest: tuple[str, ...], recorded: RecordedLinks, hops: int
) -> None:
    """Check where a recorded link leads, then the rest of the path from there."""
    if hops >= MAX_LINK_HOPS:
        raise ProviderError(
            "Unexpected symbolic link", f"{current}: more than {MAX_LINK_HOPS} recorded links in a row."
        )
    resolved_root = root.resolve()
    target = Path(os.path.normpath(current.parent / os.readlink(current)))
    try:
        inside = target.relative_to(root) if target.is_relative_to(root) else target.relative_to(resolved_root)
    except ValueError:
        raise ProviderError(
            "Unexpected symbolic link",
            f"{current} points to {target}, outside the local provider's root {root}; recorded link {link} was changed.",
        ) from None
    _walk(root, (*inside.parts, *rest), recorded, hops + 1)
