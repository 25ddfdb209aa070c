"""Pausing Python's cyclic garbage collector while a command builds its large data.

Loading 10,000 configurations and a state of 28,000 records allocates millions of dicts,
lists and model objects, few of them in reference cycles. Even with the higher thresholds that
the command-line entry sets (engine.cli.main), the collector walks them again as they pile up:
about 6% of the CPU time of a no-op plan of 10,000 volumes and 2,000 runs, as measured (see
docs/benchmarks.md). That data lives until the command ends, so `paused_collection` stops the
collector while it is built, then moves what is alive into the permanent generation, which
later collections (during a long apply) skip. Cycles made while paused are freed only when
the process ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_collection() -> Iterator[None]:
    """Run the body without cyclic garbage collection, then freeze what it left alive."""
    if not gc.isenabled():
        # An enclosing pause disabled the collector and enables it again when it ends.
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
