"""Properties of the state record checks: the shortcuts taken for speed find the same problems,
with the same messages and positions, as the general checks they stand in for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.volume_config import is_volume_name
from state.records import (
    _EXACT_TYPES,
    _OPTIONAL,
    _REQUIRED,
    _VALUE_CHECKS,
    KINDS,
    PENDING_RENAME,
    Problem,
    _type_problems,
    _types_match,
    check_records,
)

# Values of every JSON type, and of the types a state file stores.
_JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from(["", "aa", "data-1", "ZZ top", "/data", "../x"]),
    st.just({}),
    st.just({"team": "ml"}),
    st.just({"team": 1}),
    st.just([]),
)
_MISSING = object()
_NAMES = ["aa", "data-1", "ZZ top", "a", "", "x" * 50]
_ADDRESSES = ["volume." + name for name in _NAMES] + ["run.aa", "volume", "aa"]


@st.composite
def _records(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A record of `kind` whose every known field is missing or contains a value of any JSON type."""
    record: dict[str, Any] = {"kind": kind}
    for name in [*_REQUIRED[kind], *_OPTIONAL.get(kind, {})]:
        value = draw(st.one_of(st.just(_MISSING), _JSON_VALUES))
        if value is not _MISSING and name != "kind":
            record[name] = value
    return record


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KINDS).flatmap(_records))
def test_exact_types_imply_no_type_problem(record: dict[str, Any]) -> None:
    kind = record["kind"]

    if _types_match(record, _EXACT_TYPES[kind]):
        assert _type_problems(record, kind) == []


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(_NAMES),
    address=st.sampled_from(_ADDRESSES),
    pending=st.sampled_from([_MISSING, True, False]),
)
def test_volume_address_problems_follow_rule(name: str, address: str, pending: object) -> None:
    record: dict[str, Any] = {"address": address, "name": name, "id": "vol-1"}
    if pending is not _MISSING:
        record[PENDING_RENAME] = pending

    found = [text for field, text in _VALUE_CHECKS["volume"](record) if field == "address"]

    suffix = address.removeprefix("volume.")
    valid_suffix = address.startswith("volume.") and is_volume_name(suffix)
    if not valid_suffix:
        assert found == [f'address "{address}" is not volume.NAME with a valid volume name']
    elif address != f"volume.{name}" and pending is not True:
        assert found == [f'address "{address}" does not match name "{name}": expected volume.{name}']
    else:
        assert found == []


def _nesting_reference(indexed: Mapping[str, Any], positions: Mapping[str, int]) -> list[Problem]:
    """Run the nesting check as a separate pass over the records."""
    problems = []
    for address, record in indexed.items():
        parent_field = {"node": "run", "mount": "node"}.get(str(record.get("kind")))
        parent = record.get(parent_field) if parent_field else None
        if parent_field is None or not isinstance(parent, str):
            continue
        found = indexed.get(parent)
        if found is None or found.get("kind") != parent_field:
            text = f"{parent_field} {parent} is not recorded as a {parent_field}"
            problems.append(Problem(positions[address], parent_field, text))
    return problems


def _duplicate_id_reference(indexed: Mapping[str, Any], positions: Mapping[str, int], kind: str) -> list[Problem]:
    """Run the duplicate id check for one kind as a separate pass over the records."""
    first: dict[str, str] = {}
    problems = []
    for address, record in indexed.items():
        value = record.get("id")
        if record.get("kind") != kind or not isinstance(value, str):
            continue
        if value in first:
            text = f"id {value} is also recorded by {first[value]}; each {kind} has one address"
            problems.append(Problem(positions[address], "id", text))
        else:
            first[value] = address
    return problems


_LINKED_RECORD = st.fixed_dictionaries(
    {
        "address": st.sampled_from(["run.a", "run.a.node[0]", "run.a.node[1]", "run.a.node[0].mount[/d]", "volume.aa"]),
        "kind": st.sampled_from([*KINDS, "disk", None, ["node"]]),
        "id": st.sampled_from(["i-1", "i-2", "vol-1", None, 7]),
        "run": st.sampled_from(["run.a", "run.b", None]),
        "node": st.sampled_from(["run.a.node[0]", "run.a.node[1]", 3]),
    }
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINKED_RECORD, max_size=8))
@example(
    [
        {"address": "run.a.node[0]", "kind": "node", "id": "i-1", "run": "run.b", "node": 3},
        {"address": "run.a.node[1]", "kind": "node", "id": "i-1", "run": "run.b", "node": 3},
    ]
)
def test_cross_record_checks_match_separate_passes(resources: list[dict[str, Any]]) -> None:
    indexed, problems = check_records(resources)

    positions: dict[str, int] = {}
    for position, record in enumerate(resources):
        positions.setdefault(record["address"], position)
    expected_cross = (
        _nesting_reference(indexed, positions)
        + _duplicate_id_reference(indexed, positions, "volume")
        + _duplicate_id_reference(indexed, positions, "node")
    )
    cross_texts = ("is not recorded as a", "is also recorded by")
    found_cross = [problem for problem in problems if any(text in problem.text for text in cross_texts)]
    assert found_cross == sorted(expected_cross, key=lambda problem: problem.position)
