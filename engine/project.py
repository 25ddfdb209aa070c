"""Load a project folder: its `*.dstack.yml` files, its optional `volplan.yml`, and the
resources those files ask for."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import VolumeConfiguration, parse_configuration
from engine.documents import MAX_FILE_BYTES, Document, load_document
from engine.errors import ConfigError, ConfigIssue, UsageError
from engine.run_config import RunConfiguration
from engine.state_settings import StateSettings, read_state_settings
from providers.registry import PROVIDER_KINDS
from state.files import read_bounded

CONFIG_SUFFIXES = (".dstack.yml", ".dstack.yaml")
SETTINGS_FILE = "volplan.yml"
MAX_CONFIG_FILES = 1_000_000
# A run named after its file or folder: letters, digits, '-' and '_', so that addresses such as
# run.NAME.node[0] stay unambiguous (no spaces, dots or brackets).
DERIVED_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__"})


@dataclass(frozen=True)
class DesiredVolume:
    address: str
    config: VolumeConfiguration
    file: str
    line: int | None
    size_line: int | None
    # Set when `apply -f FILE -n NAME` gave the volume a name other than its configuration's.
    name_override: str | None = None


@dataclass(frozen=True)
class DesiredRun:
    address: str
    config: RunConfiguration
    file: str


@dataclass
class ProviderSettings:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    state: StateSettings = field(default_factory=StateSettings)
    moved: list[tuple[str, str]] = field(default_factory=list)
    protect: list[str] = field(default_factory=list)
    # The volplan.yml line of each protect: entry, for messages that name it.
    protect_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class Project:
    root: Path
    settings: Settings
    volumes: dict[str, DesiredVolume]
    runs: dict[str, DesiredRun]
    files: list[str]
    # None when every file of the project was loaded; else the files selected with -f.
    selected_files: list[str] | None = None
    # Set by -n NAME: of the selected file's resources, only volume.NAME is planned.
    selected_name: str | None = None

    def selects(self, file: str | None) -> bool:
        return self.selected_files is None or file in self.selected_files


def is_config_file(name: str) -> bool:
    return name.endswith(CONFIG_SUFFIXES) or name in (".dstack.yml", ".dstack.yaml")


def discover_files(root: Path) -> list[str]:
    """List configuration files below `root`, as sorted POSIX paths relative to it."""
    found: list[str] = []
    top = os.fspath(root)
    for folder, subfolders, names in os.walk(top):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in SKIPPED_FOLDERS)
        # Plain string joins: a Path per file costs more than reading the file's few lines.
        prefix = os.path.relpath(folder, top).replace(os.sep, "/") + "/" if folder != top else ""
        for name in names:
            if is_config_file(name):
                found.append(prefix + name)
                if len(found) > MAX_CONFIG_FILES:
                    raise UsageError(
                        "Too many configuration files",
                        f"{root} holds more than {MAX_CONFIG_FILES:,} configuration files. "
                        "Point -C at the project folder itself, or select files with -f.",
                    )
    return sorted(found)


def run_name_for(file: str, config: RunConfiguration, root: Path | None = None) -> str:
    """Return the run's name: its `name`, else its file name without the suffix, else (a bare
    `.dstack.yml`) the name of the folder that contains the file, the project folder included."""
    if config.name:
        return config.name
    # `file` is a relative POSIX path, so its name follows the last "/" and needs no Path object.
    name = file.rsplit("/", 1)[-1]
    for suffix in CONFIG_SUFFIXES:
        if name.endswith(suffix) and name != suffix:
            return name[: -len(suffix)]
    parent = Path(file).parent.name
    if not parent and root is not None:
        parent = root.resolve().name
    return parent or "run"


def load_project(root: Path, selected: list[str] | None = None) -> Project:
    """Load and check every configuration; all problems of all files raise one ConfigError."""
    if not _is_folder(root):
        raise UsageError("Project folder not found", f"{root} is not a folder. Pass -C DIR with the project folder.")

    files = _resolve_selected(root, selected) if selected else discover_files(root)
    issues: list[ConfigIssue] = []
    settings = load_settings(root, issues)
    volumes, runs = _load_configurations(root, files, issues)

    if issues:
        raise ConfigError(issues)
    return Project(root, settings, volumes, runs, files, selected_files=list(files) if selected else None)


def _load_configurations(
    root: Path, files: list[str], issues: list[ConfigIssue]
) -> tuple[dict[str, DesiredVolume], dict[str, DesiredRun]]:
    volumes: dict[str, DesiredVolume] = {}
    runs: dict[str, DesiredRun] = {}
    folder = _open_folder(root)
    try:
        for file in files:
            document, file_issues = _read(root, file, folder)
            issues.extend(file_issues)
            if document is None:
                continue
            config, config_issues = parse_configuration(document)
            issues.extend(config_issues)
            if isinstance(config, VolumeConfiguration):
                _add_volume(volumes, document, config, file, issues)
            elif isinstance(config, RunConfiguration):
                _add_run(runs, config, file, issues, root)
    finally:
        if folder is not None:
            os.close(folder)
    return volumes, runs


def _open_folder(root: Path) -> int | None:
    """Open `root` so that read_config_bytes can open files relative to it.

    Returns None where O_PATH is missing or the open fails. O_PATH (Linux) needs no read
    permission, so a folder that cannot be listed still works with -f.
    """
    flags = getattr(os, "O_PATH", None)
    if flags is None:
        return None
    try:
        return os.open(root, flags | os.O_DIRECTORY)
    except OSError:
        return None


def _resolve_selected(root: Path, selected: list[str]) -> list[str]:
    resolved = []
    for name in selected:
        path = (root / name) if not Path(name).is_absolute() else Path(name)
        try:
            found = path.is_file()
        except OSError as error:
            # is_file() lets errors other than "not found" through, such as a name too long.
            raise UsageError("Configuration file not found", f"{name[:100]}: {error.strerror}.") from None
        if not found:
            raise UsageError("Configuration file not found", f"{name} does not exist (looked in {root}).")
        if not is_config_file(path.name):
            raise UsageError(
                "Not a dstack configuration file name",
                f"{name}: volplan finds a project's configurations by their names (*.dstack.yml, "
                "*.dstack.yaml, .dstack.yml), so a later plan would not find this file and would delete "
                f"what it made. Rename it, for example to {Path(name).stem}.dstack.yml.",
            )
        try:
            resolved.append(path.resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            raise UsageError(
                "Configuration file outside the project",
                f"{name} is not inside the project folder {root}. Run volplan with -C pointing at its folder.",
            ) from None
    return sorted(set(resolved))


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _read(root: Path, file: str, folder: int | None) -> tuple[Document | None, list[ConfigIssue]]:
    raw, issue = read_config_bytes(root, file, folder)
    if issue is not None:
        return None, [issue]
    return load_document(file, raw)


def read_config_bytes(root: Path, file: str, folder: int | None = None) -> tuple[bytes, ConfigIssue | None]:
    """Read a configuration file of the project, at most MAX_FILE_BYTES of it.

    A link that leads outside the project folder, and anything but a regular file (a FIFO
    would block, /dev/zero would never end), is an issue instead of being read. `folder`, an
    open descriptor of `root`, saves resolving the folder's path again for each file.
    """
    try:
        # Discovery never descends into a linked folder, and -f paths are resolved first, so a
        # file that is not itself a link is inside the project. Only a link pays for resolving.
        descriptor = _open_unless_link(root, file, folder)
        if descriptor is None:
            path = os.path.join(root, file)
            target = Path(path).resolve(strict=True)
            if not target.is_relative_to(root.resolve()):
                return b"", _read_issue(file, f"is a symbolic link to {target}, outside the project folder", _LINK_FIX)
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # Plain descriptor calls: a file object per file costs more than reading its few lines.
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                return b"", _read_issue(file, "is not a regular file", "Replace it with a YAML file.")
            raw = read_bounded(descriptor, info.st_size, MAX_FILE_BYTES)
        finally:
            os.close(descriptor)
    except OSError as error:
        return b"", _read_issue(file, f"cannot be read ({error.strerror or type(error).__name__})", "")
    except RuntimeError:
        # pathlib raises RuntimeError for a loop of symbolic links.
        return b"", _read_issue(file, "is a loop of symbolic links", _LINK_FIX)
    return raw, None


_LINK_FIX = "Keep configuration files inside the project folder, or run volplan with -C pointing at their folder."


def _open_unless_link(root: Path, file: str, folder: int | None) -> int | None:
    """Open a file of the project for reading without blocking; return None when it is a symbolic link.

    The file is opened relative to `folder`, the open descriptor of `root`, when there is one.
    """
    path = file if folder is not None else os.path.join(root, file)
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=folder)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return None
        raise


def _read_issue(file: str, problem: str, fix: str) -> ConfigIssue:
    return ConfigIssue(file, None, None, "", None, problem, fix)


def _add_volume(
    volumes: dict[str, DesiredVolume],
    document: Document,
    config: VolumeConfiguration,
    file: str,
    issues: list[ConfigIssue],
) -> None:
    address = f"volume.{config.name}"
    if address in volumes:
        first = volumes[address]
        issues.append(
            document.issue(
                ("name",),
                f"is already the name of the volume in {first.file}" + (f":{first.line}" if first.line else ""),
                value=config.name,
                fix="Volume names are unique in a project: rename one of the two.",
            )
        )
        return
    line, _ = document.position(("name",))
    size_line, _ = document.position(("size",))
    volumes[address] = DesiredVolume(address, config, file, line, size_line)


def _add_run(
    runs: dict[str, DesiredRun], config: RunConfiguration, file: str, issues: list[ConfigIssue], root: Path
) -> None:
    name = run_name_for(file, config, root)
    if not config.name and not DERIVED_RUN_NAME.fullmatch(name):
        issues.append(
            ConfigIssue(
                file,
                None,
                None,
                "name",
                None,
                f"is missing, and the name taken from the file or folder name ({name!r}) cannot be part of "
                "an address such as run.NAME.node[0]",
                "Add name: with 2 to 41 characters: a lowercase letter first, then lowercase letters, digits or '-'.",
            )
        )
        return
    address = f"run.{name}"
    if address in runs:
        issues.append(
            ConfigIssue(
                file,
                None,
                None,
                "name",
                None,
                f"gives the run the name of the run in {runs[address].file}",
                "Run names are unique in a project: set a different name: in one of the two files.",
            )
        )
        return
    runs[address] = DesiredRun(address, config, file)


def load_settings(root: Path, issues: list[ConfigIssue]) -> Settings:
    """Read `volplan.yml`; every key is optional."""
    if not (root / SETTINGS_FILE).is_file():
        return Settings()
    raw, read_issue = read_config_bytes(root, SETTINGS_FILE)
    if read_issue is not None:
        issues.append(read_issue)
        return Settings()
    document, file_issues = load_document(SETTINGS_FILE, raw)
    issues.extend(file_issues)
    if document is None:
        return Settings()
    data = document.data
    if not isinstance(data, dict):
        issues.append(document.issue((), "is not a mapping", fix="Write providers:, state:, moved: or protect: keys."))
        return Settings()

    settings = Settings()
    for key in data:
        if key not in ("providers", "state", "moved", "protect"):
            issues.append(
                document.issue(
                    (str(key),),
                    "is not a volplan.yml key",
                    key=True,
                    show_value=False,
                    fix="Use providers:, state:, moved: or protect:.",
                )
            )
    _read_providers(document, data.get("providers"), settings, issues)
    _read_state_settings(document, data.get("state"), settings, issues)
    _read_moved(document, data.get("moved"), settings, issues)
    _read_protect(document, data.get("protect"), settings, issues)
    return settings


def _read_providers(document: Document, value: Any, settings: Settings, issues: list[ConfigIssue]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        issues.append(
            document.issue(
                ("providers",),
                "must map backends to provider settings",
                value=value,
                fix="Write providers: {aws: {kind: aws}}.",
            )
        )
        return
    for backend, options in value.items():
        if not isinstance(options, dict) or not isinstance(options.get("kind"), str):
            issues.append(
                document.issue(
                    ("providers", str(backend)),
                    "needs a kind: (local or aws)",
                    value=options,
                    fix=f"Write providers: {{{backend}: {{kind: local}}}}.",
                )
            )
            continue
        if options["kind"] not in PROVIDER_KINDS:
            issues.append(
                document.issue(
                    ("providers", str(backend), "kind"),
                    "is not a provider kind",
                    value=options["kind"],
                    fix=f"Use one of: {', '.join(PROVIDER_KINDS)}.",
                )
            )
            continue
        rest = {k: v for k, v in options.items() if k != "kind"}
        settings.providers[str(backend)] = ProviderSettings(options["kind"], rest)


def _read_state_settings(document: Document, value: Any, settings: Settings, issues: list[ConfigIssue]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        issues.append(
            document.issue(("state",), "must be a mapping", value=value, fix="Write state: {path: volplan.state.json}.")
        )
        return
    settings.state = read_state_settings(document, value, issues)


def _read_moved(document: Document, value: Any, settings: Settings, issues: list[ConfigIssue]) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        issues.append(
            document.issue(
                ("moved",), "must be a list", value=value, fix="Write moved: [{from: volume.a, to: volume.b}]."
            )
        )
        return
    for index, entry in enumerate(value):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("from"), str)
            or not isinstance(entry.get("to"), str)
        ):
            issues.append(
                document.issue(
                    ("moved", index),
                    "needs from: and to: addresses",
                    value=entry,
                    fix="Write - from: volume.old-name followed by to: volume.new-name.",
                )
            )
            continue
        settings.moved.append((entry["from"], entry["to"]))


def _read_protect(document: Document, value: Any, settings: Settings, issues: list[ConfigIssue]) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        issues.append(
            document.issue(
                ("protect",), "must be a list of addresses", value=value, fix="Write protect: [volume.training-data]."
            )
        )
        return
    settings.protect = list(value)
    for index, address in enumerate(value):
        line, _ = document.position(("protect", index))
        if line is not None:
            settings.protect_lines.setdefault(address, line)
