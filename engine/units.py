"""Sizes and durations in dstack's grammar, checked strictly.

The grammar follows dstack 0.22.5 (`Memory.parse` for sizes, `Duration.parse` for durations).
Where dstack silently truncates (`512MB` becomes 0 GB, `100.5GB` becomes 100 GB, a duration of
`1.5` becomes 1 second) or accepts nonsense (zero, negative or infinite sizes, `true` as 1 GB),
volplan rejects the value and names the value to write instead.
"""

from __future__ import annotations

import math
import re

# dstack's duration grammar: one number and one unit, spaces allowed between them, or bare seconds.
# `re.match` with `$` as in dstack, so the unit must end the string (a trailing newline aside).
_DURATION = re.compile(r"(\d+) *([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_GB_PER_UNIT = {"mb": 1 / 1024, "gb": 1.0, "tb": 1024.0}
DURATION_FIX = "Write one number and one unit (90s, 5m, 1h, 2d, 1w), bare seconds, or off."
# The largest size accepted anywhere (1024TB). It is a bound against nonsense, not a cloud's
# limit: each provider rejects a size above its own maximum when it creates or grows a volume.
MAX_SIZE_GB = 1024 * 1024


class UnitError(ValueError):
    """A size or duration that does not parse; `fix` is what to write instead."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def parse_size_gb(value: object) -> int:
    """Parse a dstack size (`100`, `"100"`, `100GB`, `1TB`, `1024MB`) into a positive whole number of GB.

    Spaces and case are ignored, as in dstack. TB is 1024 GB and MB is 1/1024 GB. The result is
    at most MAX_SIZE_GB.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError("is not a size", "Write a number of GB such as 100 or a string such as 100GB.")

    try:
        gigabytes = float(value) if not isinstance(value, str) else _size_text_gb(value)
    except OverflowError:
        # An integer beyond a float's range, such as 10**400.
        raise _too_large() from None

    if not math.isfinite(gigabytes):
        raise UnitError("is not a finite size", "Write a size such as 100GB.")
    if gigabytes <= 0:
        raise UnitError("must be positive", "Write a size of at least 1GB.")
    if gigabytes > MAX_SIZE_GB:
        raise _too_large()
    if gigabytes != int(gigabytes):
        nearest = max(1, round(gigabytes))
        raise UnitError(f"is {gigabytes:g} GB, not a whole number of GB", f"Write size: {nearest}GB.")
    return int(gigabytes)


def _too_large() -> UnitError:
    largest = f"{MAX_SIZE_GB // 1024}TB"
    return UnitError(
        f"is larger than {largest}, the largest size volplan accepts", f"Write a size of at most {largest}."
    )


def _size_text_gb(value: str) -> float:
    text = value.replace(" ", "").lower()
    unit = text[-2:] if text[-2:] in _GB_PER_UNIT else "gb"
    number = text[:-2] if text[-2:] in _GB_PER_UNIT else text
    try:
        return float(number) * _GB_PER_UNIT[unit]
    except ValueError:
        raise UnitError(
            "is not a size", "Write a number with an optional MB, GB or TB suffix, such as 100GB."
        ) from None


def format_size(gigabytes: int) -> str:
    return f"{gigabytes}GB"


def parse_duration(value: object, *, allow_off: bool = True) -> int | None:
    """Parse a dstack duration into seconds; `off` (or YAML's false) gives None.

    The grammar is one number and one unit (`90s`, `5m`, `1h`, `2d`, `1w`) or bare seconds, as
    an integer or a string. Compound forms such as `1h30m` are invalid, as in dstack. The sign is
    left to the caller: bare seconds may be negative.
    """
    if value is False or value == "off":
        if not allow_off:
            raise UnitError("cannot be off here", "Write a duration such as 90s or 5m.")
        return None
    if isinstance(value, bool):
        raise UnitError("is not a duration", DURATION_FIX)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _whole_seconds(value)
    if isinstance(value, str):
        return _duration_text_seconds(value)
    raise UnitError("is not a duration", DURATION_FIX)


def _whole_seconds(value: float) -> int:
    if not math.isfinite(value) or value != int(value):
        raise UnitError(
            "is not a whole number of seconds",
            f"Write {round(value) if math.isfinite(value) else 0}s, or a duration such as 5m.",
        )
    return int(value)


def _duration_text_seconds(value: str) -> int:
    # dstack tries int() first, so Python's integer syntax (signs, surrounding spaces) is accepted.
    try:
        return int(value)
    except ValueError:
        pass
    match = _DURATION.match(value)
    if not match:
        raise UnitError("is not a duration", DURATION_FIX)
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: int | None) -> str:
    if seconds is None:
        return "off"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
