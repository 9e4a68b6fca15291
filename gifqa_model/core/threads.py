"""A fixed number of torch CPU threads for a block of work: where the count changes the result
(a sum split over more threads rounds differently), it is set, never inherited from the process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside, restored after."""
    import torch  # core/ stays importable without torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
