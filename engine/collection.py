"""Pausing Python's cyclic garbage collector while a command builds its large data.

Loading 10,000 configurations and a state of 28,000 records allocates millions of dicts,
lists and model objects, few of them in reference cycles. Even with the higher thresholds that
the command-line entry sets (engine.cli.main), the collector walks them again as they pile up:
about 6% of the CPU time of a no-op plan of 10,000 volumes and 2,000 runs, as measured (see
docs/benchmarks.md). `paused_collection` stops the collector while that data is built.

In a process that ends with its command, the data also lives until the end, so the
command-line entry calls `freeze_after_pauses`: each pause then moves what is alive into the
permanent generation, which later collections (during a long apply) skip. Frozen objects are
never collected, so a process that runs many commands (the tests, a library caller) must not
freeze: a provider left in a reference cycle would keep its open files until the process ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_freeze_after_pauses = False


def freeze_after_pauses() -> None:
    """Make every later pause freeze what is alive when it ends. Only for a process that runs one command."""
    global _freeze_after_pauses
    _freeze_after_pauses = True


@contextmanager
def paused_collection() -> Iterator[None]:
    """Run the body without cyclic garbage collection, then freeze what it left alive if asked to."""
    if not gc.isenabled():
        # An enclosing pause disabled the collector and enables it again when it ends.
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if _freeze_after_pauses:
            gc.freeze()
        gc.enable()
