"""The planner's fast paths for unchanged records agree with the field-by-field comparisons."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.actions import Action
from engine.planner import _COMPARED_FIELDS, _changed, refreshed_record
from engine.run_planner import _changed_fields
from providers.base import VolumeFacts

# Field names of volume, run, node and mount records, plus one that no record kind has.
_NAMES = st.sampled_from([*_COMPARED_FIELDS, "address", "kind", "run", "node", "volume_id", "stopped", "other"])
# Values that compare equal across types (1, 1.0, True) and nested mappings, as in tags.
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([1.0, 0.0]),
    st.sampled_from(["", "a", "b"]),
    st.dictionaries(st.sampled_from(["team", "env"]), st.sampled_from(["x", "y"]), max_size=2),
)
_RECORDS = st.dictionaries(_NAMES, _VALUES, max_size=8)


def _changed_by_field(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    return tuple(name for name in _COMPARED_FIELDS if before.get(name) != after.get(name))


def _changed_fields_by_field(record: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    return tuple(name for name in sorted(after) if record.get(name) != after[name])


@given(_RECORDS, _RECORDS)
def test_volume_changed_matches_field_loop(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert _changed(before, after) == _changed_by_field(before, after)


@given(_RECORDS)
def test_volume_changed_of_copy_is_empty(record: dict[str, Any]) -> None:
    assert _changed(record, dict(record)) == ()


@given(_RECORDS, _RECORDS)
def test_run_changed_fields_match_field_loop(record: dict[str, Any], after: dict[str, Any]) -> None:
    assert _changed_fields(record, after) == _changed_fields_by_field(record, after)


@given(_RECORDS, _RECORDS)
def test_run_changed_fields_of_subset_is_empty(record: dict[str, Any], extra: dict[str, Any]) -> None:
    after = dict(record)
    record_with_more = {**extra, **record}
    assert _changed_fields(record_with_more, after) == ()


def test_is_change_false_for_no_op_only() -> None:
    for action in Action:
        assert action.is_change is (action is not Action.NO_OP), action


def _refreshed_copy(record: dict[str, Any], facts: VolumeFacts) -> dict[str, Any]:
    updated = dict(record)
    updated["size_gb"] = facts.size_gb
    updated["availability_zone"] = facts.availability_zone
    if not record.get("external"):
        updated["tags"] = dict(facts.tags)
    return updated


_TAGS = st.dictionaries(st.sampled_from(["team", "env"]), st.sampled_from(["x", "y"]), max_size=2)
_SIZES = st.one_of(st.integers(1, 3), st.just(True), st.just(1.0))
_ZONES = st.sampled_from([None, "a", "b"])


@given(
    st.fixed_dictionaries(
        {"address": st.just("volume.data")},
        optional={"size_gb": _SIZES, "availability_zone": _ZONES, "tags": _TAGS, "external": st.booleans()},
    ),
    st.integers(1, 3),
    _ZONES,
    _TAGS,
)
def test_refreshed_record_matches_copy(
    record: dict[str, Any], size_gb: int, zone: str | None, tags: dict[str, str]
) -> None:
    facts = VolumeFacts("vol-1", "aws", "eu-west-1", zone, size_gb, tags, "2026-01-01T00:00:00Z")
    refreshed = refreshed_record(record, facts)
    expected = _refreshed_copy(record, facts)
    assert refreshed == expected
    assert json.dumps(refreshed, sort_keys=True) == json.dumps(expected, sort_keys=True)
