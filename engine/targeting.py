"""Resource targeting: `--target ADDR` and `--exclude ADDR` narrow a finished plan.

The rules follow Terraform's `-target` and OpenTofu's `-exclude`. An address selects the
resource itself and every resource nested under it (`run.train` selects
`run.train.node[0]` and its mounts). A target also keeps every change that a kept change depends
on, following the plan graph's edges backwards, so a mount's attach keeps its volume's create
and its node's start. An exclusion drops every change that depends on an excluded one, so
nothing runs without what it needs. Either way the plan gets a warning that it is partial.

Pure: the plan and the graph are data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from engine.actions import Plan
from engine.errors import UsageError

if TYPE_CHECKING:
    import networkx as nx

# volume.NAME or run.NAME, optionally followed by .node[RANK] and .mount[PATH].
_ADDRESS = re.compile(r"^(volume|run)\.\S+$")


def check_address(address: str, option: str) -> None:
    """Raise UsageError unless `address` is written as a resource address."""
    if _ADDRESS.match(address):
        return
    hint = f" Did you mean volume.{address}?" if "." not in address else ""
    raise UsageError(
        f"Invalid value for {option}",
        f"{address!r} is not a resource address. Write volume.NAME, run.NAME, run.NAME.node[RANK] or "
        f"run.NAME.node[RANK].mount[PATH].{hint}",
    )


def selects(pattern: str, address: str) -> bool:
    """Return whether `pattern` names `address` or a resource that `address` is nested under."""
    return address == pattern or address.startswith(pattern + ".")


def check_known(patterns: Iterable[str], option: str, known: Iterable[str]) -> None:
    """Raise UsageError for a pattern that matches no resource in the configurations or the state."""
    addresses = sorted(set(known))
    for pattern in patterns:
        check_address(pattern, option)
        if not any(selects(pattern, address) for address in addresses):
            raise UsageError(
                f"Invalid value for {option}",
                f"{pattern} matches no resource: no configuration defines it and the state does not record it. "
                "volplan state list shows the recorded addresses.",
            )


def narrow(plan: Plan, graph: nx.DiGraph, targets: tuple[str, ...], excludes: tuple[str, ...]) -> Plan:
    """Keep the changes that the targets need and drop the excluded ones with their dependents."""
    if not targets and not excludes:
        return plan
    every = [change.address for change in plan.changes]
    kept = set(every)

    if targets:
        chosen = {address for address in every if any(selects(t, address) for t in targets)}
        kept = chosen | _dependencies(graph, chosen)
    if excludes:
        dropped = {address for address in every if any(selects(e, address) for e in excludes)}
        kept -= dropped | _dependents(graph, dropped)

    narrowed = Plan(
        changes=[change for change in plan.changes if change.address in kept],
        edges=[edge for edge in plan.edges if edge[0] in kept and edge[1] in kept],
        warnings=list(plan.warnings),
        notes=list(plan.notes),
        lineage=plan.lineage,
        serial=plan.serial,
    )
    narrowed.warnings.append(_partial_warning(plan, narrowed, targets, excludes))
    return narrowed


def _dependencies(graph: nx.DiGraph, addresses: set[str]) -> set[str]:
    import networkx as nx  # loaded only when targets narrow a plan; see engine.planner.build_graph

    found: set[str] = set()
    for address in addresses:
        if address in graph:
            found |= nx.ancestors(graph, address)
    return found


def _dependents(graph: nx.DiGraph, addresses: set[str]) -> set[str]:
    import networkx as nx

    found: set[str] = set()
    for address in addresses:
        if address in graph:
            found |= nx.descendants(graph, address)
    return found


def _partial_warning(plan: Plan, narrowed: Plan, targets: tuple[str, ...], excludes: tuple[str, ...]) -> str:
    left_out = len(plan.actionable) - len(narrowed.actionable)
    options = [f"--target {address}" for address in targets] + [f"--exclude {address}" for address in excludes]
    return (
        f"this plan is partial because of {' '.join(options)}: {left_out} other change"
        f"{'' if left_out == 1 else 's'} of the full plan {'is' if left_out == 1 else 'are'} left out, so the "
        "volumes may not match the configurations after apply. Use these options to recover from a mistake "
        "or to work around a failure, then run volplan plan without them to see every change."
    )
