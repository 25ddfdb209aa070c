from __future__ import annotations

import pytest

from engine.units import UnitError, format_duration, parse_duration, parse_size_gb


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (100, 100),
        ("100", 100),
        ("100GB", 100),
        ("100 gb", 100),
        (" 2TB ", 2048),
        ("1024TB", 1024 * 1024),
        ("1024MB", 1),
        (1.0, 1),
        ("1 0 0 G B", 100),
        ("1e2GB", 100),
        ("0.5TB", 512),
    ],
)
def test_size_accepted(value: object, expected: int) -> None:
    assert parse_size_gb(value) == expected


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        ("512MB", "Write size: 1GB."),
        ("100.5GB", "Write size: 100GB."),
        (0, "Write a size of at least 1GB."),
        (-5, "Write a size of at least 1GB."),
        ("ten", "Write a number with an optional MB, GB or TB suffix, such as 100GB."),
        (True, "Write a number of GB such as 100 or a string such as 100GB."),
        ("100PB", "Write a number with an optional MB, GB or TB suffix, such as 100GB."),
        ("inf", "Write a size such as 100GB."),
        ("1025TB", "Write a size of at most 1024TB."),
        (1024 * 1024 + 1, "Write a size of at most 1024TB."),
        (10**400, "Write a size of at most 1024TB."),
        (float("nan"), "Write a size such as 100GB."),
    ],
)
def test_size_rejected_with_fix(value: object, fix: str) -> None:
    with pytest.raises(UnitError) as caught:
        parse_size_gb(value)
    assert caught.value.fix == fix


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("1w", 604800),
        (30, 30),
        ("45", 45),
        ("off", None),
        (False, None),
        ("90 s", 90),
        (" 45 ", 45),
        ("-5", -5),
        (60.0, 60),
    ],
)
def test_duration_accepted(value: object, seconds: int | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["1h30m", "5 minutes", "", "m", 1.5, None, "1.5h", "OFF", "5M", " 5m", "-5m", True])
def test_duration_rejected(value: object) -> None:
    with pytest.raises(UnitError):
        parse_duration(value)


def test_duration_off_rejected_where_not_allowed() -> None:
    with pytest.raises(UnitError):
        parse_duration("off", allow_off=False)


@pytest.mark.parametrize(("seconds", "text"), [(None, "off"), (90, "90s"), (300, "5m"), (7200, "2h"), (0, "0s")])
def test_duration_format(seconds: int | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_size_above_limit_rejected() -> None:
    with pytest.raises(UnitError) as caught:
        parse_size_gb("1e30TB")
    assert "larger than 1024TB" in caught.value.problem
