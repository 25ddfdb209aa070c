"""Run the volplan CLI with the local provider paused at one point, for signal and kill tests.

The local provider finishes a call in about a millisecond, where a cloud takes seconds, so a
signal sent by a test would rarely find a call in flight. This entry point (a test helper, not
part of volplan) pauses each matching call, then runs the real CLI in a real process:

    VOLPLAN_TEST_PAUSE=create.made=2 python -m tests.paused_volplan -C PROJECT apply -y

Points: `create.staged` (the temporary folder is complete, not yet renamed into place),
`create.made` (the volume exists, the call has not returned), `delete.trashed` (the volume
folder was renamed to the trash, its files are not yet removed), `attach.made` (the mount's
link and claim exist, the call has not returned). The value is in seconds.
"""

from __future__ import annotations

import os
import shutil
import time
import types
from pathlib import Path
from typing import Any

import providers.local as local
from engine.cli import main
from providers.base import MountSpec, VolumeFacts, VolumeSpec


def _pause_create_made(seconds: float) -> None:
    create = local.LocalProvider.create_volume

    def paused(self: local.LocalProvider, spec: VolumeSpec, token: str) -> VolumeFacts:
        facts = create(self, spec, token)
        time.sleep(seconds)
        return facts

    local.LocalProvider.create_volume = paused  # type: ignore[method-assign]


def _pause_create_staged(seconds: float) -> None:
    fsync_directory = local.fsync_directory

    def paused(folder: Path) -> None:
        fsync_directory(folder)
        if folder.name.startswith(local.STAGING_PREFIX):
            time.sleep(seconds)

    local.fsync_directory = paused


def _pause_delete_trashed(seconds: float) -> None:
    def rmtree(path: Any, ignore_errors: bool = False) -> None:
        if Path(path).name.startswith(local.TRASH_PREFIX):
            time.sleep(seconds)
        shutil.rmtree(path, ignore_errors=ignore_errors)

    local.shutil = types.SimpleNamespace(rmtree=rmtree)  # type: ignore[assignment]


def _pause_attach_made(seconds: float) -> None:
    attach = local.LocalProvider.attach_volume

    def paused(self: local.LocalProvider, mount: MountSpec) -> None:
        attach(self, mount)
        time.sleep(seconds)

    local.LocalProvider.attach_volume = paused  # type: ignore[method-assign]


_POINTS = {
    "attach.made": _pause_attach_made,
    "create.made": _pause_create_made,
    "create.staged": _pause_create_staged,
    "delete.trashed": _pause_delete_trashed,
}


if __name__ == "__main__":
    point, _, seconds = os.environ["VOLPLAN_TEST_PAUSE"].partition("=")
    _POINTS[point](float(seconds))
    main()
