"""Sizes and durations in dstack's grammar, checked strictly.

dstack truncates sizes that are not whole GB and accepts zero or negative sizes; volplan
rejects them and names the whole size to write instead.
"""

from __future__ import annotations

import math
import re

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(mb|gb|tb)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(-?[0-9]+)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_GB_PER_UNIT = {"mb": 1 / 1024, "gb": 1.0, "tb": 1024.0}


class UnitError(ValueError):
    """A size or duration that does not parse; `fix` tells what to write instead."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def parse_size_gb(value: object) -> int:
    """Parse a dstack size (`100`, `100GB`, `1TB`, `512MB`) into a positive whole number of GB."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError("is not a size", "Write a number of GB such as 100 or a string such as 100GB.")

    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise UnitError(
                "is not a size",
                "Write a number with an optional MB, GB or TB suffix, such as 100GB.",
            )
        gigabytes = float(match.group(1)) * _GB_PER_UNIT[(match.group(2) or "gb").lower()]
    else:
        gigabytes = float(value)

    if not math.isfinite(gigabytes) or gigabytes <= 0:
        raise UnitError("must be positive", "Write a size of at least 1GB.")
    if gigabytes != int(gigabytes):
        nearest = max(1, round(gigabytes))
        raise UnitError(
            f"is {gigabytes:g} GB, not a whole number of GB",
            f"Write size: {nearest}GB.",
        )
    return int(gigabytes)


def format_size(gigabytes: int) -> str:
    return f"{gigabytes}GB"


def parse_duration(value: object, *, allow_off: bool = True) -> int | None:
    """Parse a dstack duration into seconds; `off` (or YAML's false) gives None.

    The grammar is one number and one unit (`90s`, `5m`, `1h`, `2d`, `1w`) or bare seconds.
    Compound forms such as `1h30m` are invalid, as in dstack.
    """
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        if not allow_off:
            raise UnitError("cannot be off here", "Write a duration such as 90s or 5m.")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise UnitError(
        "is not a duration",
        "Write one number and one unit (90s, 5m, 1h, 2d, 1w), bare seconds, or off.",
    )


def format_duration(seconds: int | None) -> str:
    if seconds is None:
        return "off"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
