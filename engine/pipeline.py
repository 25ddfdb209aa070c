"""The plan the user asked for: the diff of engine.planner with the options around it.

Steps, in order:

1. `moved:` entries move recorded volumes to their new addresses (engine.renames);
2. the planner diffs the configurations against that state, forcing a replace for each
   `--replace` address, or `cleanup` plans the deletion of idle volumes instead (engine.cleanup);
3. renames get their previous address, and deletes that look like renames get a warning;
4. `--target` and `--exclude` narrow the plan along its graph (engine.targeting);
5. the plan is rejected if it deletes or replaces an address under `protect:` (engine.protection).

Pure, like the planner: every input is data.
"""

from __future__ import annotations

import dataclasses

from engine.actions import Plan
from engine.cleanup import plan_cleanup
from engine.errors import UsageError
from engine.planner import PlanInput, build_graph, make_plan
from engine.protection import check_protected
from engine.renames import apply_moves, mark_renames, suggest_moves
from engine.targeting import check_address, check_known, narrow


def plan_changes(source: PlanInput) -> Plan:
    """Make the plan for `source`, with its moves, targets and protection applied."""
    cleanup_at = source.cleanup_at
    plan = plan_cleanup(source, cleanup_at) if cleanup_at is not None else _plan_configurations(source)

    known = _known_addresses(source, plan) if _reads_known(source) else set()
    # NOTE: targets narrow the finished plan, so a planning error of an untargeted volume (a
    # shrink, a region change without --allow-replace) still stops a targeted plan.
    check_known(source.targets, "--target", known)
    check_known(source.excludes, "--exclude", known)
    if source.targets or source.excludes:
        plan = narrow(plan, build_graph(plan), source.targets, source.excludes)

    check_protected(plan, source.project.settings)
    plan.warnings.extend(_unmatched_settings(source, known))
    return plan


def _reads_known(source: PlanInput) -> bool:
    """Return whether an option or setting names addresses that must be checked against the known ones."""
    settings = source.project.settings
    return bool(source.targets or source.excludes or settings.protect or settings.moved)


def _known_addresses(source: PlanInput, plan: Plan) -> set[str]:
    """Collect every address that the plan, the configurations or the state names."""
    known = {change.address for change in plan.changes} | set(source.project.runs) | set(source.project.volumes)
    if source.prior is not None:
        known |= set(source.prior.resources)
    return known


def _unmatched_settings(source: PlanInput, known: set[str]) -> list[str]:
    """Warn about protect: and moved: entries that name nothing, which is most often a typo."""
    settings = source.project.settings
    warnings = [
        f"protect: lists {address}, which no configuration defines and the state does not record; "
        f"check the spelling in volplan.yml, or remove the entry"
        for address in settings.protect
        if address not in known
    ]
    warnings.extend(
        f"moved: from {old} to {new} names neither a recorded resource nor a configuration; "
        f"check the spelling in volplan.yml, or remove the entry once the move is applied"
        for old, new in settings.moved
        if old not in known and new not in known
    )
    return warnings


def _plan_configurations(source: PlanInput) -> Plan:
    defined = set(source.project.volumes) | set(source.project.runs)
    # destroy defines nothing, so it has nothing to move: every recorded address goes.
    moved = [] if source.destroy else source.project.settings.moved
    moves = apply_moves(moved, source.prior, source.facts, defined)
    _check_replace(source, set(moves.prior.resources) if moves.prior else set())

    plan = make_plan(dataclasses.replace(source, prior=moves.prior, facts=moves.facts))
    mark_renames(plan, moves.renamed)
    plan.warnings.extend(moves.warnings)
    plan.warnings.extend(suggest_moves(plan))
    return plan


def _check_replace(source: PlanInput, recorded: set[str]) -> None:
    for address in source.replace:
        check_address(address, "--replace")
        if address not in recorded:
            raise UsageError(
                "Invalid value for --replace",
                f"the state records no {address}, so there is nothing to replace. "
                "volplan state list shows the recorded addresses.",
            )
