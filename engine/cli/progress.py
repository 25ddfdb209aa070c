"""Apply progress: a line per step as it starts and ends, a live status region, a summary table.

On a terminal with colour, a live region under the step lines shows the steps in flight and
what each waiting step waits for. Anywhere else (a pipe, a CI log, NO_COLOR, --no-color,
TERM=dumb) the same step lines are printed one after another without escape sequences, and a
step that runs long prints a "Still ..." line every `still_every` seconds, so a log never looks
stuck.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from engine.actions import SUMMARY_ORDER, Action, Change
from engine.cli.common import GlobalOptions, color_enabled, describe_failure
from engine.executor import Events, StepResult, StepStatus
from engine.render import progress_words

# Per action, the verb shown while a step runs and the phrase shown when it ends.
_VERBS = {
    Action.CREATE: ("Creating", "Creation complete"),
    Action.REGISTER: ("Registering", "Registration complete"),
    Action.UPDATE: ("Modifying", "Modifications complete"),
    Action.REPLACE: ("Replacing", "Replacement complete"),
    Action.DELETE: ("Destroying", "Destruction complete"),
    Action.DEREGISTER: ("Deregistering", "Deregistration complete"),
}


def _starting(change: Change) -> str:
    return progress_words(change, (f"{_VERBS[change.action][0]}...", _VERBS[change.action][1]))[0]


def _finished(change: Change) -> str:
    return progress_words(change, (f"{_VERBS[change.action][0]}...", _VERBS[change.action][1]))[1]


# Live lines for steps in flight; the rest are counted in one "and N more" line.
_MAX_LIVE_STEPS = 8
# How often the live mode prints the step lines that have waited since the last flush.
_FLUSH_SECONDS = 0.1
# Wide enough that a summary table in a log is never wrapped.
_PLAIN_WIDTH = 200


def format_elapsed(seconds: float) -> str:
    """Format a duration as 0.4s, 12s or 3m05s."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


@dataclass
class _Running:
    change: Change
    started: float
    waiting_for: str | None = None
    last_still: float = 0.0


class ApplyProgress(Events):
    """Apply progress output, used as a context manager around the apply.

    The executor calls the Events methods from its worker threads, so every method takes the lock
    before it touches the steps in flight.
    """

    def __init__(self, console: Console, *, live: bool, still_every: float = 10.0) -> None:
        self.console = console
        self.live = live
        self.still_every = still_every
        self.expected: int | None = None
        self.results: list[StepResult] = []
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._started: float | None = None
        self._ended: float | None = None
        self._display: Live | None = None
        self._ticker: threading.Thread | None = None
        self._closing = threading.Event()
        # Live mode: step lines wait here and are printed together at each flush, because every
        # print redraws the live region, and one redraw per line slows a large apply.
        self._pending: list[Text] = []
        # One spinner for the whole apply: its frame follows the time since it was made.
        self._spinner = Spinner("dots")

    @classmethod
    def for_options(cls, options: GlobalOptions) -> ApplyProgress:
        """Choose live or plain output for stdout, following --no-color, NO_COLOR and TERM=dumb."""
        live = color_enabled(options) and os.environ.get("TERM") != "dumb"
        if live:
            console = Console(force_terminal=True, highlight=False, markup=False, emoji=False, soft_wrap=True)
        else:
            console = Console(
                color_system=None,
                force_terminal=False,
                no_color=True,
                highlight=False,
                markup=False,
                emoji=False,
                soft_wrap=True,
                width=_PLAIN_WIDTH,
            )
        return cls(console, live=live)

    def expect(self, count: int) -> None:
        """Set how many steps the apply will run, for the live status line."""
        self.expected = count

    @property
    def elapsed(self) -> float:
        """Seconds from the first step's start to the end of the apply; 0 when no step ran.

        The time spent planning and waiting for approval is not counted.
        """
        if self._started is None:
            return 0.0
        return (self._ended or time.monotonic()) - self._started

    def __enter__(self) -> ApplyProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop()
        if kind is None and self.results:
            self.console.print()
            self._print_table(self.summary_table())

    # Events, called by the executor.

    def step_started(self, change: Change) -> None:
        with self._lock:
            now = time.monotonic()
            self._running[change.address] = _Running(change, now, last_still=now)
            first = self._started is None
            if first:
                self._started = now
        if first:
            self._start()
        self._print(Text(f"{change.address}: {_starting(change)}"))

    def step_waiting(self, change: Change, message: str) -> None:
        with self._lock:
            running = self._running.get(change.address)
            if running is None or running.waiting_for == message:
                return
            running.waiting_for = message
        if not self.live:
            self._print(Text(f"{change.address}: {message}"))

    def warning(self, message: str) -> None:
        """Print a warning about a step that succeeded, such as a forced detach, on stderr."""
        # The live display redirects stderr above its region, so the warning never garbles it.
        click.echo(f"Warning: {message}", err=True)

    def step_finished(self, result: StepResult) -> None:
        with self._lock:
            self._running.pop(result.change.address, None)
            self.results.append(result)
        self._print(self._finished_line(result))

    # Output.

    def _finished_line(self, result: StepResult) -> Text:
        change = result.change
        line = Text(f"{change.address}: ")
        if result.status is StepStatus.SUCCEEDED:
            line.append(f"{_finished(change)} after {format_elapsed(result.elapsed)}", style="green")
            if result.resource_id:
                line.append(f" [id={result.resource_id}]")
        elif result.status is StepStatus.FAILED:
            line.append(
                f"failed after {format_elapsed(result.elapsed)}: {describe_failure(result.error)}", style="bold red"
            )
        else:
            line.append(f"skipped because {result.skipped_because} failed", style="yellow")
        return line

    def _print(self, line: Text) -> None:
        if self._display is not None:
            with self._lock:
                self._pending.append(line)
            return
        # Step lines are never wrapped: a log reader searches them whole.
        self.console.print(line, soft_wrap=True)

    def _flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        if lines:
            self.console.print(Group(*lines), soft_wrap=True)

    def _flush_regularly(self) -> None:
        while not self._closing.wait(_FLUSH_SECONDS):
            self._flush()

    def _print_table(self, table: Table) -> None:
        if self.live:
            self.console.print(table)
            return
        # Rich pads every cell to its column's width; a log needs no trailing spaces.
        with self.console.capture() as captured:
            self.console.print(table)
        for line in captured.get().splitlines():
            self.console.print(line.rstrip(), soft_wrap=True)

    def summary_table(self) -> Table:
        """Build the summary: per action, the steps that succeeded, failed and were skipped, and the slowest."""
        table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
        for name in ("ACTION", "SUCCEEDED", "FAILED", "SKIPPED", "SLOWEST"):
            table.add_column(name, justify="right" if name in ("SUCCEEDED", "FAILED", "SKIPPED") else "left")

        for action in SUMMARY_ORDER:
            results = [result for result in self.results if result.change.action is action]
            if not results:
                continue
            counts = {status: sum(1 for r in results if r.status is status) for status in StepStatus}
            timed = [r for r in results if r.status is not StepStatus.SKIPPED]
            slowest = max(timed, key=lambda r: r.elapsed, default=None)
            table.add_row(
                action.value,
                str(counts[StepStatus.SUCCEEDED]),
                _count(counts[StepStatus.FAILED], "red"),
                _count(counts[StepStatus.SKIPPED], "yellow"),
                f"{slowest.change.address} ({format_elapsed(slowest.elapsed)})" if slowest else "-",
            )
        return table

    def _status(self) -> RenderableType:
        """Render the live region: the steps in flight, then a spinner with the counts so far."""
        now = time.monotonic()
        with self._lock:
            running = sorted(self._running.values(), key=lambda r: r.started)
            done = len(self.results)
            failed = sum(1 for r in self.results if r.status is StepStatus.FAILED)
        lines: list[RenderableType] = []
        for step in running[:_MAX_LIVE_STEPS]:
            lines.append(self._running_line(step, now))
        if len(running) > _MAX_LIVE_STEPS:
            lines.append(Text(f"  ... and {len(running) - _MAX_LIVE_STEPS} more in progress", style="dim"))

        total = f"/{self.expected}" if self.expected else ""
        counts = f"Applying: {done}{total} done, {len(running)} in progress"
        if failed:
            counts += f", {failed} failed"
        counts += f" [{format_elapsed(now - (self._started or now))}]"
        self._spinner.update(text=Text(counts, style="bold"))
        lines.append(self._spinner)
        return Group(*lines)

    @staticmethod
    def _running_line(step: _Running, now: float) -> Text:
        elapsed = format_elapsed(now - step.started)
        if step.waiting_for:
            return Text(f"  {step.change.address}: {step.waiting_for} [{elapsed}]", style="yellow")
        return Text(f"  {step.change.address}: {_starting(step.change)} [{elapsed}]", style="dim")

    def _still_running(self) -> None:
        """Print a line for each step still running, every `still_every` seconds (plain output only)."""
        while not self._closing.wait(min(1.0, self.still_every)):
            now = time.monotonic()
            due: list[tuple[_Running, float]] = []
            with self._lock:
                for step in self._running.values():
                    if now - step.last_still >= self.still_every:
                        step.last_still = now
                        due.append((step, now - step.started))
            for step, elapsed in due:
                doing = step.waiting_for or _starting(step.change)
                self._print(
                    Text(f"{step.change.address}: Still {_lowercase_first(doing)} [{format_elapsed(elapsed)} elapsed]")
                )

    # Starting and stopping the live region or the ticker.

    def _start(self) -> None:
        if self.live:
            self._display = Live(
                console=self.console,
                get_renderable=self._status,
                refresh_per_second=8,
                transient=True,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._display.start(refresh=True)
            self._ticker = threading.Thread(target=self._flush_regularly, name="volplan-progress", daemon=True)
            self._ticker.start()
        else:
            self._ticker = threading.Thread(target=self._still_running, name="volplan-progress", daemon=True)
            self._ticker.start()

    def refresh(self) -> None:
        """Redraw the live region now, rather than at the next tick."""
        if self._display is not None:
            self._display.refresh()

    def _stop(self) -> None:
        if self._started is not None and self._ended is None:
            self._ended = time.monotonic()
        self._closing.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()
            self._ticker = None
        if self._display is not None:
            self._flush()
            self._display.stop()
            self._display = None
            self._flush()  # a line queued during the stop


def _count(value: int, style: str) -> Text:
    return Text(str(value), style=style if value else "")


def _lowercase_first(text: str) -> str:
    return text[:1].lower() + text[1:]
