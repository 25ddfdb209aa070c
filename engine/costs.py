"""The storage cost change of a plan per month, estimated from the list prices in engine/prices.py.

Pure: the plan comes in, the estimate goes out. A change costs what it adds to the volumes that
volplan pays for: a create adds its volume, a delete removes one, an update or a replace adds
the difference. Registering and deregistering change nothing, because the volume exists either
way, and a registered (external) volume never counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from engine.actions import Action, Change, Plan, Record
from engine.prices import DEFAULT_VOLUME_TYPE, StoragePrice, find_price

_PRICED_ACTIONS = (Action.CREATE, Action.UPDATE, Action.REPLACE, Action.DELETE)


@dataclass(frozen=True)
class CostChange:
    """The monthly cost change of one planned change; `monthly` is None when it is unknown."""

    address: str
    monthly: Decimal | None
    prices: tuple[StoragePrice, ...] = ()
    unknown_because: str = ""


@dataclass(frozen=True)
class CostEstimate:
    changes: list[CostChange] = field(default_factory=list)
    # Whether a priced volume is served by the local provider, which itself costs nothing.
    served_locally: bool = False

    @property
    def known(self) -> list[CostChange]:
        return [change for change in self.changes if change.monthly is not None]

    @property
    def unknown(self) -> list[CostChange]:
        return [change for change in self.changes if change.monthly is None]

    @property
    def monthly_total(self) -> Decimal:
        return sum((change.monthly for change in self.known if change.monthly is not None), Decimal(0))

    @property
    def copied_on(self) -> list[str]:
        return sorted({price.copied_on for change in self.changes for price in change.prices})

    def for_address(self, address: str) -> CostChange | None:
        return next((change for change in self.changes if change.address == address), None)


def estimate_costs(plan: Plan) -> CostEstimate:
    """Estimate the storage cost change per month of each priced change in `plan`."""
    changes: list[CostChange] = []
    served_locally = False
    for change in plan.actionable:
        if change.action not in _PRICED_ACTIONS or not _is_volume(change):
            continue
        estimate = _estimate_change(change)
        if estimate.monthly is None or estimate.monthly != 0:
            changes.append(estimate)
        served_locally |= any(_paid(record) and record.get("provider") == "local" for record in _records(change))
    return CostEstimate(changes, served_locally)


def _estimate_change(change: Change) -> CostChange:
    before = change.before if change.action in (Action.UPDATE, Action.REPLACE, Action.DELETE) else None
    after = change.after if change.action in (Action.CREATE, Action.UPDATE, Action.REPLACE) else None

    total = Decimal(0)
    prices: list[StoragePrice] = []
    for record, sign in ((before, -1), (after, 1)):
        if record is None or not _paid(record):
            continue
        price = find_price(str(record.get("backend")), record.get("region"))
        size = record.get("size_gb")
        if price is None:
            return CostChange(change.address, None, unknown_because=_no_price(record))
        if not isinstance(size, int):
            return CostChange(change.address, None, unknown_because="its size is not known")
        total += sign * size * price.usd_per_gb_month
        prices.append(price)
    return CostChange(change.address, total, tuple(dict.fromkeys(prices)))


def _is_volume(change: Change) -> bool:
    return any(record.get("kind") == "volume" for record in _records(change))


def _records(change: Change) -> Iterable[Record]:
    return (record for record in (change.before, change.after) if record is not None)


def _paid(record: Record) -> bool:
    """Return whether volplan creates and deletes this volume, which a registered volume is not."""
    return not record.get("external")


def _no_price(record: Record) -> str:
    backend = record.get("backend")
    volume_type = DEFAULT_VOLUME_TYPE.get(str(backend), "any volume type")
    return f"no list price for {backend} {volume_type} in region {record.get('region') or '(none)'}"
