"""Pausing Python's cyclic garbage collector while a command builds its large data.

Loading 10,000 configurations and a state of 28,000 records allocates millions of dicts,
lists and model objects, few of them in reference cycles. With the collector running, Python
walks them again and again as they pile up: a collection after every 700 new containers, and
full ones as the old generation grows: about 6% of the CPU time of a no-op plan of 10,000
volumes and 2,000 runs, as measured (docs/benchmarks.md). That data lives
until the command ends, so `paused_collection` stops the collector while it is built, then
moves what is alive into the permanent generation, which later collections (during a long
apply) skip. Cycles made while paused are freed only when the process ends.
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
