"""Walk the plan graph in dependency order with a pool of workers.

A step starts when every step it depends on has succeeded. A failed step skips everything
that depends on it, and independent steps go on. When `stop` is set (an interrupt), no new
step starts and the steps in flight finish.

A step that must wait for the cloud (a detach in progress) returns a `Poll`. The executor
calls it again after the poll's delay, and no worker is held between calls, so a long wait
does not use a parallelism slot.
"""

from __future__ import annotations

import enum
import functools
import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.actions import Change
from engine.errors import VolplanError

if TYPE_CHECKING:
    import networkx as nx

log = logging.getLogger(__name__)


class StepStatus(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_STARTED = "not started"


@dataclass
class StepResult:
    change: Change
    status: StepStatus
    error: BaseException | None = None
    elapsed: float = 0.0
    skipped_because: str | None = None
    # The provider id of the resource the step made or changed, for progress output.
    resource_id: str | None = None


@dataclass
class ExecutionReport:
    results: list[StepResult] = field(default_factory=list)
    interrupted: bool = False

    def with_status(self, status: StepStatus) -> list[StepResult]:
        return [result for result in self.results if result.status is status]

    @property
    def ok(self) -> bool:
        return all(result.status is StepStatus.SUCCEEDED for result in self.results)


@dataclass
class Poll:
    """A step that waits: the executor calls `resume` after `delay` seconds, outside any worker."""

    delay: float
    resume: Callable[[], StepOutcome]


# The result of a step: the provider id of the resource it leaves (for progress output), or a
# Poll when it is still waiting.
StepOutcome = str | None | Poll


class Events:
    """Callbacks for progress output; the default does nothing. Called from worker threads."""

    def step_started(self, change: Change) -> None:
        pass

    def step_finished(self, result: StepResult) -> None:
        pass

    def warning(self, message: str) -> None:
        """Something people must know about a step that succeeded, such as a forced detach."""
        pass

    def step_waiting(self, change: Change, message: str) -> None:
        """Report that a started step is waiting, such as "detaching (up to 5m, the run's stop_duration)".

        A step may call this several times to update the message; its step_finished ends the wait.
        """


def execute(
    graph: nx.DiGraph,
    order: list[Change],
    run_step: Callable[[Change], StepOutcome],
    *,
    parallelism: int,
    events: Events | None = None,
    stop: threading.Event | None = None,
) -> ExecutionReport:
    events = events or Events()
    stop = stop or threading.Event()
    position = {change.address: index for index, change in enumerate(order)}
    by_address = {change.address: change for change in order}
    waiting_on = {address: graph.in_degree(address) for address in position}
    ready = [(position[a], a) for a in position if waiting_on[a] == 0]
    heapq.heapify(ready)
    # Steps waiting for their next poll: (due time, position, address, poll).
    sleeping: list[tuple[float, int, str, Poll]] = []
    started: dict[str, float] = {}
    outcome: dict[str, StepResult] = {}

    with ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="volplan-step") as pool:
        running: dict[Future[StepResult | Poll], str] = {}
        while ready or running or sleeping:
            while sleeping and sleeping[0][0] <= time.monotonic() and len(running) < parallelism:
                _, _, address, poll = heapq.heappop(sleeping)
                running[pool.submit(_call, by_address[address], poll.resume, started[address])] = address
            while ready and len(running) < parallelism and not stop.is_set():
                _, address = heapq.heappop(ready)
                started[address] = time.monotonic()
                events.step_started(by_address[address])
                step = functools.partial(run_step, by_address[address])
                running[pool.submit(_call, by_address[address], step, started[address])] = address
            if not running and not sleeping:
                break

            timeout = max(0.0, sleeping[0][0] - time.monotonic()) if sleeping else None
            if not running:
                assert timeout is not None
                time.sleep(timeout)
                continue
            finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in finished:
                address = running.pop(future)
                result = future.result()
                if isinstance(result, Poll):
                    due = time.monotonic() + max(0.0, result.delay)
                    heapq.heappush(sleeping, (due, position[address], address, result))
                    continue
                outcome[address] = result
                events.step_finished(result)
                if result.status is StepStatus.SUCCEEDED:
                    _release_successors(graph, address, waiting_on, ready, position, outcome)
                else:
                    _skip_dependents(graph, address, outcome, by_address, events)

    report = ExecutionReport(interrupted=stop.is_set())
    for change in order:
        report.results.append(outcome.get(change.address) or StepResult(change, StepStatus.NOT_STARTED))
    return report


def _call(change: Change, step: Callable[[], StepOutcome], started: float) -> StepResult | Poll:
    try:
        resource_id = step()
    except VolplanError as error:
        log.info("step %s %s failed: %s", change.action.value, change.address, error)
        return StepResult(change, StepStatus.FAILED, error, time.monotonic() - started)
    except Exception as error:  # a bug: keep the traceback for the debug log
        log.exception("step %s %s raised an unexpected error", change.action.value, change.address)
        return StepResult(change, StepStatus.FAILED, error, time.monotonic() - started)
    if isinstance(resource_id, Poll):
        log.debug("step %s %s waits %.1fs before its next poll", change.action.value, change.address, resource_id.delay)
        return resource_id
    return StepResult(change, StepStatus.SUCCEEDED, None, time.monotonic() - started, resource_id=resource_id)


def _release_successors(
    graph: nx.DiGraph,
    address: str,
    waiting_on: dict[str, int],
    ready: list[tuple[int, str]],
    position: dict[str, int],
    outcome: dict[str, StepResult],
) -> None:
    for successor in graph.successors(address):
        waiting_on[successor] -= 1
        if waiting_on[successor] == 0 and successor not in outcome:
            heapq.heappush(ready, (position[successor], successor))


def _skip_dependents(
    graph: nx.DiGraph, address: str, outcome: dict[str, StepResult], by_address: dict[str, Change], events: Events
) -> None:
    import networkx as nx  # only a failed step needs it; see engine.planner.build_graph

    for dependent in sorted(nx.descendants(graph, address)):
        if dependent in outcome:
            continue
        log.info("skipping %s because %s failed", dependent, address)
        result = StepResult(by_address[dependent], StepStatus.SKIPPED, skipped_because=address)
        outcome[dependent] = result
        events.step_finished(result)
