"""Imports with CPython's cyclic garbage collector paused.

The collector runs each time allocations outnumber frees by 700, and each run looks at every
object of the generations it collects. Importing torch, transformers, open_clip and MLflow
makes millions of objects that live as long as the process, so while they import it looks at
them again and again and frees nothing: about a fifth of the CPU a process spends importing
what training imports, here (`python bench/import_gc.py`). `collector_paused` turns it off
while they import; on the way out it freezes what exists by then (no collection looks at those
objects again, and a process forked afterwards shares their memory pages instead of copying
each one a collection would touch), then turns it back on for what the command allocates.
The cycles the imports left behind are frozen with the rest and never freed (about 13,000
objects after what training and MLflow import, a few MB): a full collection to free them
would cost half a second.

Only the standard library is imported here: the `gifqa` launcher imports it first.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside; on leaving, every object alive is frozen and the collector
    is on again if it was on before."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_on:
            gc.enable()
