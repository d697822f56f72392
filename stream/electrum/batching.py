"""Pure batch planning: de-duplication, spreading over servers, chunking, re-assembly."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Dedup", "assemble", "chunk", "dedupe", "expand", "spread"]

T = TypeVar("T", bound=Hashable)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Dedup(Generic[T]):
    """``unique`` items in first-seen order; ``positions[i]`` is the index in ``unique`` of
    the caller's i-th item."""

    unique: tuple[T, ...]
    positions: tuple[int, ...]


def dedupe(items: Sequence[T]) -> Dedup[T]:
    index: dict[T, int] = {}
    positions = []
    for item in items:
        positions.append(index.setdefault(item, len(index)))
    return Dedup(tuple(index), tuple(positions))


def expand(dedup: Dedup[T], results: Sequence[R]) -> list[R]:
    """Map results of the unique items back to the caller's order (duplicates share one)."""
    if len(results) != len(dedup.unique):
        raise ValueError(f"expected {len(dedup.unique)} results, got {len(results)}")
    return [results[pos] for pos in dedup.positions]


def assemble(dedup: Dedup[T], results: Sequence[R], *, missing: object) -> list[R]:
    """``expand``, refusing to hand back ``missing``: the placeholder of a unique call that
    got no result (the plan never sent it). That is a bug in this module or its caller, so
    it raises ``RuntimeError`` instead of giving the caller a placeholder for an answer."""
    lost = [i for i, result in enumerate(results) if result is missing]
    if lost:
        raise RuntimeError(
            f"{len(lost)} of {len(results)} unique batch call(s) got no result "
            f"(first: #{lost[0]}): the batch plan did not send them"
        )
    return expand(dedup, results)


def spread(count: int, servers: int, *, per_server: int = 25, threshold: int = 10) -> list[range]:
    """Split ``count`` items into contiguous index ranges, one per server to use.

    Up to ``threshold`` items stay on one server (a round trip beats fan-out); above it,
    about ``per_server`` items go to each server, on at most ``servers`` servers.
    """
    if count <= 0:
        return []
    if count <= threshold or servers <= 1:
        return [range(count)]
    used = max(1, min(servers, -(-count // per_server)))
    size, extra = divmod(count, used)
    ranges = []
    start = 0
    for i in range(used):
        stop = start + size + (1 if i < extra else 0)
        ranges.append(range(start, stop))
        start = stop
    return ranges


def chunk(indices: range | Sequence[int], max_chunk: int = 100) -> list[list[int]]:
    """Split indices into lists of at most ``max_chunk`` (one JSON-RPC batch each)."""
    if max_chunk < 1:
        raise ValueError(f"max_chunk must be >= 1, got {max_chunk}")
    seq = list(indices)
    return [seq[i : i + max_chunk] for i in range(0, len(seq), max_chunk)]
