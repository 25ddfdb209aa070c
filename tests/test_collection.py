"""The pause of the cyclic garbage collector around loading and planning."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from engine.collection import paused_collection


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_collector_off_inside_on_after() -> None:
    assert gc.isenabled()

    with paused_collection():
        assert not gc.isenabled()
        records = [{"record": index} for index in range(1000)]

    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(records)


def test_collector_on_after_error() -> None:
    with pytest.raises(ValueError), paused_collection():
        raise ValueError("planning failed")

    assert gc.isenabled()


def test_nested_pause_keeps_outer() -> None:
    with paused_collection():
        with paused_collection():
            pass
        assert not gc.isenabled()

    assert gc.isenabled()
