"""How a stage's per-GIF work is cut into shards and mapped over them.

The library only cuts and merges; *where* the shards run is injected by the caller as a
`ShardMapper`: the serial default here, or a Prefect task runner on a Dask cluster
(flows/fanout.py). A shard's result depends on its items alone, so the merged output is the
same whichever mapper ran it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# map(fn, shards) → each shard's result, in shard order
ShardMapper = Callable[[Callable[[list], list], list[list]], Iterable[list]]


def split_shards(items: list, n: int) -> list[list]:
    """`items` in `n` contiguous, near-equal shards; concatenated, they are `items`. No items,
    no shards: a mapper given none starts nothing (a cached rerun sends no work to a cluster)."""
    if not items:
        return []
    n = max(1, min(n, len(items)))
    bounds = [round(i * len(items) / n) for i in range(n + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def serial_mapper(fn: Callable[[list], list], shards: list[list]) -> Iterable[list]:
    return map(fn, shards)


# Where the stages run their shards: this process, unless the orchestration side injects a
# fan-out (flows/fanout.py puts a Dask cluster behind it); the outputs are the same.
_factory: Callable[[], tuple[ShardMapper, int] | None] = lambda: None  # noqa: E731


def inject(factory: Callable[[], tuple[ShardMapper, int] | None]) -> None:
    """Set what `injected()` asks: a (mapper, number of shards) pair, or None for serial."""
    global _factory
    _factory = factory


def injected() -> tuple[ShardMapper | None, int]:
    chosen = _factory()
    return chosen if chosen is not None else (None, 1)
