"""Mount paths: the text-based normalisation agrees with PurePosixPath, which dstack uses."""

from __future__ import annotations

from pathlib import PurePosixPath

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.mounts import normalize_path

_PARTS = st.sampled_from(["", ".", "..", "data", "a.b", "...", " ", "x y", "workflow"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_PARTS, max_size=6))
def test_normalize_path_matches_pure_posix_path(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    expected_parts = PurePosixPath(path).parts

    assert normalize_path(path) == "/" + str(PurePosixPath(path)).lstrip("/")
    assert (".." in path.split("/")) == (".." in expected_parts)
    assert normalize_path(path).split("/")[1] == (expected_parts[1] if len(expected_parts) > 1 else "")


def test_normalize_path_keeps_no_double_slash() -> None:
    assert normalize_path("//data/./x/") == "/data/x"
