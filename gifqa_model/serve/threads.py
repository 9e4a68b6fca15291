"""Where the server's torch work runs: every call into a loaded model on one thread, and each
load on a thread of its own that ends with the load.

torch runs its CPU ops on an OpenMP team per calling thread. While two threads that called
torch are alive, their teams outnumber the cores and libgomp throttles its spin-wait: every
parallel region then pays a sleep and a wake-up, and on 2 cores each model call took about 3×
as long (docs/serving.md, one thread for torch). So answers, descriptions, searches and warm-ups
share one thread, and a load (seconds of deserializing, while the old version still serves) runs
on a thread that exits when it is done, taking its team with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ModelThread:
    """The one thread every call into a model runs on."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="gifqa-model")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


async def in_own_thread(fn: Callable[..., T], *args: Any, name: str = "gifqa-load") -> T:
    """`fn(*args)` on a new thread (`<name>_0`) that exits when it returns (its OpenMP team
    with it): an executor of its own, shut down once the call returns or nobody waits."""
    executor = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    finally:
        executor.shutdown(wait=False)
