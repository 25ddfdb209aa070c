"""Render a plan's storage cost estimate for people, as text lines or as Markdown."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from engine.costs import CostChange, CostEstimate

# How many changes of unknown cost are named before the rest are counted.
_NAMED_UNKNOWN = 5


def money(amount: Decimal) -> str:
    """Format a signed amount of US dollars to the cent: +$8.00, -$1,234.50, $0.00."""
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if cents > 0:
        return f"+${cents:,}"
    if cents < 0:
        return f"-${-cents:,}"
    return f"${abs(cents):,}"


def cost_lines(estimate: CostEstimate) -> list[str]:
    """Return the human plan's cost lines; none when no change has a storage cost."""
    lines = []
    if estimate.known:
        lines.append(
            f"Storage cost change: {money(estimate.monthly_total)} per month, an estimate from list prices "
            f"copied on {', '.join(estimate.copied_on)} (taxes, discounts and snapshots left out)."
        )
    if estimate.known and estimate.served_locally:
        lines.append("  These are the backends' list prices; the local provider that serves the volumes costs nothing.")
    if estimate.unknown:
        lines.append(f"Storage cost unknown for {_unknown_text(estimate.unknown, code=False)}.")
    return lines


def cost_markdown(estimate: CostEstimate) -> list[str]:
    """Return the Markdown plan's cost paragraph as lines; none when no change has a storage cost."""
    lines = []
    if estimate.known:
        lines.append(
            f"**Storage cost change:** {money(estimate.monthly_total)} per month. This is an estimate from "
            f"list prices copied on {', '.join(estimate.copied_on)}; taxes, discounts and snapshots are left out."
        )
    if estimate.known and estimate.served_locally:
        lines.append("These are the backends' list prices; the local provider that serves the volumes costs nothing.")
    if estimate.unknown:
        lines.append(f"**Storage cost unknown** for {_unknown_text(estimate.unknown, code=True)}.")
    return [" ".join(lines)] if lines else []


def change_cost_text(change: CostChange) -> str:
    """Describe one change's cost per month, with the price it was computed from."""
    if change.monthly is None:
        return f"unknown: {change.unknown_because}"
    prices = "; ".join(
        f"{price.backend} {price.volume_type} in {price.region} at ${price.usd_per_gb_month} per GB-month, "
        f"copied on {price.copied_on}"
        for price in change.prices
    )
    return f"{money(change.monthly)} per month ({prices})"


def _unknown_text(unknown: list[CostChange], code: bool) -> str:
    quote = "`" if code else ""
    named = [f"{quote}{change.address}{quote} ({change.unknown_because})" for change in unknown[:_NAMED_UNKNOWN]]
    rest = len(unknown) - len(named)
    if rest:
        named.append(f"and {rest} more")
    return ", ".join(named)
