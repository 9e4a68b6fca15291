"""Which threads run torch, and with how many CPU threads each.

`torch_threads`: a fixed number of torch CPU threads for a block of work: where the count
changes the result (a sum split over more threads rounds differently), it is set, never
inherited from the process.

`ModelThread`, `in_own_thread`, `on_own_thread`: torch runs its CPU ops on an OpenMP team per
calling thread. While two threads that called torch are alive, their teams outnumber the cores
and libgomp throttles its spin-wait: every parallel region then pays a sleep and a wake-up, and
on 2 cores each model call took about 2-3x as long (docs/serving.md, one thread for torch). So
every call into a loaded model runs on one thread, and a load (seconds of deserializing) runs on
a thread that exits when it is done, taking its team with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

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


class ModelThread:
    """The one thread every call into a model runs on, started at the first call."""

    def __init__(self, name: str = "gifqa-model") -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on the model thread; the caller's thread waits for it."""
        return self.executor.submit(fn, *args, **kwargs).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the model thread; the event loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def on_own_thread(fn: Callable[..., T], *args: Any, name: str = "gifqa-load") -> T:
    """`fn(*args)` on a new thread (`<name>_0`) that has exited when this returns."""
    with ThreadPoolExecutor(1, thread_name_prefix=name) as executor:
        return executor.submit(fn, *args).result()


async def in_own_thread(fn: Callable[..., T], *args: Any, name: str = "gifqa-load") -> T:
    """`fn(*args)` on a new thread (`<name>_0`) that exits when it returns (its OpenMP team
    with it): an executor of its own, shut down once the call returns or nobody waits."""
    executor = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    finally:
        executor.shutdown(wait=False)
