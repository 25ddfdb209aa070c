"""Recovery from interrupted applies.

A killed apply can leave three things behind. The journal may record finished steps that the
state lacks, creates whose volume or node may or may not exist (found again by their
idempotency token), and attaches that may or may not have happened (looked up on the node).
The provider may keep leftovers of its own, such as the local provider's temporary folders.
`plan` reads all three and writes nothing; `apply` saves what it recovered before its first
step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import StateError, VolplanError
from engine.project import Project
from engine.run_steps import node_record_from_facts
from engine.steps import record_from_facts
from providers.base import NodeFacts, Provider, VolumeFacts
from providers.registry import ProviderSet
from state.journal import Intent, JournalContents, fold_results
from state.model import State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adoption:
    """The outcome of a create intent without a result: the volume it made, or None."""

    intent: Intent
    facts: VolumeFacts | NodeFacts | None


def recover_journal(state: State | None, journal: JournalContents, providers: ProviderSet) -> tuple[State, list[str]]:
    """Fold the results of an interrupted apply into the state, and adopt what its pending
    creates made, found by their idempotency tokens."""
    if state is None:
        if journal.lineage is None:
            raise StateError("Damaged journal", "the journal has no lineage and there is no state file beside it.")
        state = State(lineage=journal.lineage)
    elif journal.lineage is not None and journal.lineage != state.lineage:
        raise StateError(
            "Journal from another state",
            f"the journal belongs to lineage {journal.lineage}, the state to {state.lineage}. "
            "Move the journal away if it came from another project.",
        )

    state = fold_results(state, journal.results)
    messages = []
    if journal.results:
        messages.append(f"read {len(journal.results)} finished step(s) that only the journal recorded")

    for adoption in find_created(journal.pending, providers):
        intent = adoption.intent
        assert intent.record is not None
        what = intent.record.get("kind", "volume")
        if adoption.facts is None:
            messages.append(f"{intent.address}: an interrupted create made no {what}; it is planned again")
            continue
        if what == "mount":
            state.resources[intent.address] = dict(intent.record)
            messages.append(
                f"{intent.address}: adopted the mount on node {adoption.facts.id}, made by an interrupted attach"
            )
            continue
        if isinstance(adoption.facts, NodeFacts):
            state.resources[intent.address] = node_record_from_facts(intent.record, adoption.facts)
        else:
            state.resources[intent.address] = record_from_facts(intent.record, adoption.facts)
        messages.append(f"{intent.address}: adopted {what} {adoption.facts.id}, made by an interrupted create")

    for intent in journal.pending:
        if intent.action != "create":
            messages.append(
                f"{intent.address}: an interrupted {intent.action} of {intent.token}; the refresh checks whether it happened"
            )
    return state, messages


def find_created(intents: Iterable[Intent], providers: ProviderSet) -> list[Adoption]:
    """Look up, in one call per provider and kind, the volume or node each create intent made."""
    creates = [intent for intent in intents if intent.action == "create" and intent.record]
    records_by_provider: dict[tuple[str, str, str], list[Intent]] = {}
    for intent in creates:
        assert intent.record is not None
        key = (intent.record["provider"], intent.record.get("backend") or "", intent.record.get("kind", "volume"))
        records_by_provider.setdefault(key, []).append(intent)

    found: dict[str, VolumeFacts | NodeFacts] = {}
    for (kind, backend, record_kind), group in sorted(records_by_provider.items()):
        provider = providers.by_kind(kind, backend or None)
        tokens = [intent.token for intent in group]
        regions = sorted({intent.record.get("region") for intent in group if intent.record}, key=str)
        if record_kind == "node":
            found.update(provider.find_nodes_by_token(tokens, regions))
        elif record_kind == "mount":
            found.update(_attached(group, provider))
        elif record_kind == "volume":
            found.update(provider.find_volumes_by_token(tokens, regions))
    return [Adoption(intent, found.get(intent.token)) for intent in creates]


def _attached(intents: list[Intent], provider: Provider) -> dict[str, NodeFacts]:
    """Return, by token, the node of each interrupted attach that the provider shows done."""
    nodes = provider.refresh_nodes({intent.record["node_id"] for intent in intents if intent.record})
    found = {}
    for intent in intents:
        assert intent.record is not None
        facts = nodes.get(intent.record["node_id"])
        mount = facts.mounts.get(intent.record["path"]) if facts else None
        if facts is None or mount is None:
            continue
        if (mount.volume_id, mount.instance_path) == (
            intent.record.get("volume_id"),
            intent.record.get("instance_path"),
        ):
            found[intent.token] = facts
    return found


def providers_in_use(state: State | None, project: Project, providers: ProviderSet) -> list[Provider]:
    """Return the providers that serve the state's resources or the project's volumes, each once."""
    pairs: set[tuple[str, str | None]] = {
        (providers.kind_for(volume.config.backend), volume.config.backend) for volume in project.volumes.values()
    }
    if state is not None:
        pairs |= {
            (record["provider"], record.get("backend"))
            for record in state.resources.values()
            if isinstance(record.get("provider"), str)
        }
    chosen: dict[str, Provider] = {}
    for kind, backend in sorted(pairs, key=lambda pair: (pair[0], pair[1] or "")):
        if kind not in chosen:
            chosen[kind] = providers.by_kind(kind, backend)
    return list(chosen.values())


def find_leftovers(providers: Iterable[Provider]) -> list[str]:
    messages = []
    for provider in providers:
        messages.extend(provider.find_leftovers())
    return [f"{message}; the next apply removes them" for message in messages]


def remove_leftovers(providers: Iterable[Provider]) -> list[str]:
    """Remove each provider's leftovers; a failure is reported and does not stop the apply."""
    messages = []
    for provider in providers:
        try:
            messages.extend(provider.remove_leftovers())
        except (VolplanError, OSError) as error:
            log.warning("could not remove the leftovers of %s: %s", provider.describe(), error)
            messages.append(
                f"could not remove leftovers of {provider.describe()} ({error}); the next apply tries again"
            )
    return messages
