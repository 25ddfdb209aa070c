"""Run volplan on a pseudo-terminal, so that its questions are asked and answered as a user would."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TerminalResult:
    exit_code: int
    # Everything the terminal showed: output, questions and the echoed answers.
    screen: str
    unanswered: list[str] = field(default_factory=list)


def run_in_terminal(
    project: Path, *args: str, answers: list[tuple[str, str]] | None = None, timeout: float = 60
) -> TerminalResult:
    """Run `volplan -C project ARGS` with stdin, stdout and stderr on a pseudo-terminal.

    `answers` pairs the text of each expected question with the line to type once it appears.
    """
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "-C", str(project), *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=project,
        close_fds=True,
    )
    os.close(terminal)
    try:
        screen, unanswered = _converse(controller, process, list(answers or []), time.monotonic() + timeout)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(controller)
    return TerminalResult(process.returncode, screen.replace("\r\n", "\n"), [question for question, _ in unanswered])


def _converse(
    controller: int, process: subprocess.Popen[bytes], pending: list[tuple[str, str]], deadline: float
) -> tuple[str, list[tuple[str, str]]]:
    screen = b""
    answered_up_to = 0
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.05)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        screen += chunk
        if pending and pending[0][0].encode() in screen[answered_up_to:]:
            os.write(controller, (pending[0][1] + "\n").encode())
            answered_up_to = len(screen)
            pending.pop(0)
    else:
        raise TimeoutError(f"volplan did not finish; the terminal showed:\n{screen.decode(errors='replace')}")
    return screen.decode(errors="replace"), pending
