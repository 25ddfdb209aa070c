"""Storage cost estimates: list prices per backend, region and volume type, and the plan's lines."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from engine.actions import Action, Change, Plan
from engine.costs import estimate_costs
from engine.prices import PRICES, find_price
from engine.render_costs import money
from tests.conftest import run, volume_file


def volume(size: int = 100, region: str = "us-east-1", backend: str = "aws", **extra: object) -> dict[str, object]:
    return {
        "address": "volume.data",
        "kind": "volume",
        "backend": backend,
        "region": region,
        "size_gb": size,
        "external": False,
        "provider": "aws",
        **extra,
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(Change("volume.data", Action.CREATE, "", None, volume()), Decimal("8.00"), id="create"),
        pytest.param(
            Change("volume.data", Action.DELETE, "", volume(region="eu-central-1"), None), Decimal("-9.52"), id="delete"
        ),
        pytest.param(Change("volume.data", Action.UPDATE, "", volume(100), volume(150)), Decimal("4.00"), id="grow"),
        pytest.param(
            Change("volume.data", Action.REPLACE, "", volume(100, "us-east-1"), volume(100, "eu-central-1")),
            Decimal("1.52"),
            id="replace-in-dearer-region",
        ),
        pytest.param(
            Change("volume.data", Action.REPLACE, "", volume(100, external=True), volume(50)),
            Decimal("4.00"),
            id="registered-becomes-managed",
        ),
    ],
)
def test_change_costs(change: Change, expected: Decimal) -> None:
    estimate = estimate_costs(Plan([change]))

    assert [item.monthly for item in estimate.changes] == [expected]
    assert estimate.monthly_total == expected


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(Change("volume.data", Action.REGISTER, "", None, volume(external=True)), id="register"),
        pytest.param(Change("volume.data", Action.DEREGISTER, "", volume(external=True), None), id="deregister"),
        pytest.param(Change("volume.data", Action.UPDATE, "", volume(tags={}), volume(tags={"a": "b"})), id="retag"),
        pytest.param(Change("volume.data", Action.NO_OP, "", volume(), volume()), id="no-op"),
    ],
)
def test_changes_without_cost(change: Change) -> None:
    assert estimate_costs(Plan([change])).changes == []


def test_unknown_region_and_backend() -> None:
    plan = Plan(
        [
            Change("volume.a", Action.CREATE, "", None, volume(region="eu-west-3")),
            Change("volume.b", Action.CREATE, "", None, volume(backend="gcp", region="us-west1")),
            Change("volume.c", Action.CREATE, "", None, volume()),
        ]
    )

    estimate = estimate_costs(plan)

    assert [(item.address, item.unknown_because) for item in estimate.unknown] == [
        ("volume.a", "no list price for aws gp3 in region eu-west-3"),
        ("volume.b", "no list price for gcp any volume type in region us-west1"),
    ]
    assert estimate.monthly_total == Decimal("8.00")


def test_price_table_rows_are_dated_and_sourced() -> None:
    for price in PRICES:
        assert price.copied_on[:2] == "20"
        assert price.source.startswith("https://")
        assert price.usd_per_gb_month > 0
    assert find_price("aws", "us-east-1") is not None
    assert find_price("aws", "us-east-1", "io2") is None
    assert find_price("local", "us-east-1") is None


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("8"), "+$8.00"),
        (Decimal("-1234.505"), "-$1,234.51"),
        (Decimal("0.004"), "$0.00"),
        (Decimal("-0.001"), "$0.00"),
    ],
)
def test_money(amount: Decimal, text: str) -> None:
    assert money(amount) == text


def test_human_plan_shows_cost(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="100GB", region="us-east-1")
    volume_file(project, "logs", size="10GB", region="ap-south-2")

    result = run(project, "plan")

    assert result.exit_code == 0, result.output
    assert "Storage cost change: +$8.00 per month, an estimate from list prices copied on 2026-12-04" in result.stdout
    assert "the local provider that serves the volumes costs nothing" in result.stdout
    assert "Storage cost unknown for volume.logs (no list price for aws gp3 in region ap-south-2)." in result.stdout


def test_no_cost_line_without_changes(project: Path, local_root: Path) -> None:
    volume_file(project, "data", size="100GB", region="us-east-1")
    run(project, "apply", "-y")

    result = run(project, "plan")

    assert "Storage cost" not in result.stdout
