"""A fixed number of torch CPU threads for a block of work: where the count changes the result
(a sum split over more threads rounds differently), it is set, never inherited from the process."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_held = {"depth": 0, "n": 0, "before": 0}  # blocks inside, their count, the count before the first


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside, restored when the last block leaves. Blocks
    may overlap (a server embeds on several threads at once); each saving and restoring the
    count by itself would leave it at whatever the last one saw."""
    import torch  # core/ stays importable without torch

    with _lock:
        if _held["depth"] == 0:
            _held.update(before=torch.get_num_threads(), n=n)
            torch.set_num_threads(n)
        elif _held["n"] != n:
            raise RuntimeError(f"torch's threads are held at {_held['n']}, not {n}, elsewhere")
        _held["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _held["depth"] -= 1
            if _held["depth"] == 0:
                torch.set_num_threads(_held["before"])
