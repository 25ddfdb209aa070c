"""Error types shared by every layer.

A `VolplanError` is something the user can act on: it carries a fixed title and a detail
that names the file, field or address, the value found and the fix. Anything else that
escapes is a bug, and the CLI reports it as one.
"""

from __future__ import annotations

from dataclasses import dataclass


class VolplanError(Exception):
    """An error the user can act on, shown as a title and a detail."""

    def __init__(self, title: str, detail: str = "") -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.title = title
        self.detail = detail


class UsageError(VolplanError):
    """Invalid flags or arguments."""


class PlanError(VolplanError):
    """The configurations and the state cannot be reconciled as asked."""


class StateError(VolplanError):
    """The state file is missing, damaged or from another lineage."""


class LockError(VolplanError):
    """The state lock could not be acquired."""


class ProviderError(VolplanError):
    """A provider call failed; the detail names the resource and the next step."""


class VolumeNotFound(ProviderError):
    """The provider has no volume with the given id."""


class InterruptedApply(VolplanError):
    """An apply stopped early because of a signal."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__("Apply interrupted", f"received {signal_name}")
        self.exit_code = exit_code


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one configuration file, located as precisely as the input allows."""

    file: str
    line: int | None
    column: int | None
    field: str
    value: str | None
    problem: str
    fix: str = ""

    def location(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def format(self) -> str:
        where = self.location()
        subject = f"{self.field}: " if self.field else ""
        found = f" (found {self.value})" if self.value is not None else ""
        text = f"{where}: {subject}{self.problem}{found}."
        if self.fix:
            text += f" {self.fix}"
        return text


class ConfigError(VolplanError):
    """Every problem found in the configurations, collected before exiting."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line or 0, i.column or 0))
        count = len(self.issues)
        title = "Invalid configuration" if count == 1 else f"{count} configuration errors"
        super().__init__(title, "\n".join(issue.format() for issue in self.issues))
