"""Name overrides: one volume configuration applied under other names with `-n NAME`.

`apply -f FILE -n NAME` plans the file's volume as `volume.NAME`, as `dstack apply -n` does, so
that one file can make `data-0`, `data-1` and so on. The state records such a volume with its
`file` and its `name_override`. Later plans treat it as defined by that file under that name,
so it follows the file's changes. It is planned for deletion only when the file is gone, by
`delete -f FILE` (every volume of the file) or by `delete -f FILE -n NAME` (that one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from engine.actions import Record
from engine.errors import UsageError
from engine.project import DesiredVolume, Project
from engine.volume_config import is_volume_name


def select_name(project: Project, name: str) -> Project:
    """Limit a project loaded with one -f FILE to `volume.NAME`, as delete -f FILE -n NAME does."""
    _check_name(name)
    _single_file(project)
    return dataclasses.replace(project, selected_name=name)


def override_name(project: Project, name: str) -> Project:
    """Rename the volume of the one selected file to `name`, as apply -f FILE -n NAME does."""
    _check_name(name)
    file = _single_file(project)
    volumes = [volume for volume in project.volumes.values() if volume.file == file]
    if not volumes:
        raise UsageError(
            "No volume to name",
            f"{file} is not a volume configuration. -n NAME names the volume of a volume configuration; "
            "runs are not managed by volplan yet.",
        )

    volume = volumes[0]
    if name != volume.config.name:
        volume = renamed(volume, name)
    return dataclasses.replace(project, volumes={volume.address: volume}, runs={}, selected_name=name)


def renamed(volume: DesiredVolume, name: str) -> DesiredVolume:
    return DesiredVolume(
        address=f"volume.{name}",
        config=volume.config.model_copy(update={"name": name}),
        file=volume.file,
        line=volume.line,
        size_line=volume.size_line,
        name_override=name,
    )


def desired_volumes(project: Project, prior: Mapping[str, Record], errors: list[str]) -> dict[str, DesiredVolume]:
    """Collect the project's volumes and, unless -n selected one, every recorded override of a loaded file."""
    desired = dict(project.volumes)
    for address, volume in project.volumes.items():
        if not volume.name_override:
            continue
        record = prior.get(address)
        if record is not None and record.get("file") != volume.file:
            errors.append(
                f"{volume.file}: -n {volume.name_override}: {address} already exists, defined by "
                f"{_origin(record)}. Choose another name, or delete that volume first."
            )
    if project.selected_name is not None:
        return desired

    own_volumes = {volume.file: volume for volume in project.volumes.values() if volume.name_override is None}
    # Few records carry an override, so they are picked out before the sort.
    overridden = sorted((a, r) for a, r in prior.items() if r.get("name_override") and r.get("kind") == "volume")
    for address, record in overridden:
        name = record["name_override"]
        source = own_volumes.get(str(record.get("file")))
        if source is None:
            continue
        if address in desired:
            if desired[address].file != source.file:
                errors.append(
                    f"{desired[address].file}: {address} is defined there, and the state records it as "
                    f"{_origin(record)}. Rename one of the two."
                )
            continue
        desired[address] = renamed(source, name)
    return desired


def in_scope(project: Project, record: Record) -> bool:
    """Return whether a recorded resource that no configuration defines may be planned for removal."""
    if not project.selects(record.get("file")):
        return False
    return project.selected_name is None or record.get("address") == f"volume.{project.selected_name}"


def _origin(record: Record) -> str:
    file = record.get("file")
    if record.get("name_override"):
        return f"{file} applied with -n {record['name_override']}"
    return str(file)


def _single_file(project: Project) -> str:
    if project.selected_files is None or len(project.selected_files) != 1:
        raise UsageError(
            "-n needs one configuration file",
            "-n NAME names the volume of one file: pass exactly one -f FILE, as in "
            "volplan apply -f volume.dstack.yml -n data-1.",
        )
    return project.selected_files[0]


def _check_name(name: str) -> None:
    if not is_volume_name(name):
        raise UsageError(
            "Invalid value for -n",
            f"{name!r} is not a valid volume name. Use 2 to 41 characters: a lowercase letter first, "
            "then lowercase letters, digits or '-'.",
        )
