"""List prices of volume storage per backend, region and volume type, for the plan's cost line.

Every figure is a list price in US dollars per GB-month of provisioned storage, copied by hand
from the source named beside it on the date given. The plan shows it as an estimate, because
the bill differs: taxes, discounts and credits, IOPS or throughput above the gp3 baseline,
snapshots, and price changes after the copy date are all left out. A backend, region or volume
type missing from the table has no price, and the plan reports its cost as unknown.

NOTE: the AWS figures come from pages that quote the Amazon EBS pricing page
(https://aws.amazon.com/ebs/pricing/), not from that page itself. Check them there before
relying on them, and update the row with its new date and source.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class StoragePrice:
    """The list price of one backend's volume type in one region."""

    backend: str
    region: str
    volume_type: str
    usd_per_gb_month: Decimal
    # ISO date on which the figure was copied from `source`.
    copied_on: str
    source: str


# The volume type each backend creates. dstack's AWS backend creates every volume as gp3
# (create_volume in src/dstack/_internal/core/backends/aws/compute.py), and volplan follows it.
DEFAULT_VOLUME_TYPE: dict[str, str] = {"aws": "gp3"}

PRICES: tuple[StoragePrice, ...] = (
    StoragePrice(
        "aws",
        "us-east-1",
        "gp3",
        Decimal("0.08"),
        "2026-12-04",
        "https://www.saisci.com/aws/gp2-vs-gp3-cost-comparison-ebs-volumes/ (gp3 storage in US East "
        "(N. Virginia), quoted from the Amazon EBS pricing page; the page was last updated 2021-02-04). "
        "dstack's AWS backend uses the same 0.08 per GB for its volume price.",
    ),
    StoragePrice(
        "aws",
        "eu-central-1",
        "gp3",
        Decimal("0.0952"),
        "2026-12-04",
        "https://hendric-jabs.de/2023/11/02/gp3-in-2-minuten/ (gp3 storage in eu-central-1, "
        "in a worked example dated 2023-11-02)",
    ),
)

_BY_KEY = {(price.backend, price.region, price.volume_type): price for price in PRICES}


def find_price(backend: str, region: str | None, volume_type: str | None = None) -> StoragePrice | None:
    """Return the list price of a volume, or None when the table has none."""
    kind = volume_type or DEFAULT_VOLUME_TYPE.get(backend)
    if region is None or kind is None:
        return None
    return _BY_KEY.get((backend, region, kind))
