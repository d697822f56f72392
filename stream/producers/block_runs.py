"""The block producer's pure parts: reading a ``blockchain.block.headers`` answer, and
the window to resume with after a restart (from the stored tip and ``block`` events).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batcher.events import Event

from .block_header import HEADER_SIZE, BlockHeader
from .chain_updates import KnownBlock, Tip
from .headers import DEFAULT_MAX_DEPTH

__all__ = ["linked_run", "parse_headers_result", "seed_window"]


def parse_headers_result(result: Any) -> list[BlockHeader]:
    """The headers of a ``blockchain.block.headers`` answer: protocol 1.6's
    ``{"count", "max", "headers": [hex, ...]}`` or 1.4's ``{"hex": concatenated, "count"}``.
    ``ValueError`` for anything else."""
    if not isinstance(result, Mapping):
        raise ValueError(f"expected an object, got {type(result).__name__}")
    if "headers" in result:
        items = result["headers"]
        if not isinstance(items, list):
            raise ValueError("'headers' is not a list")
        headers = [BlockHeader.parse(item) for item in items]
    elif "hex" in result:
        text = result["hex"]
        if not isinstance(text, str) or len(text) % (2 * HEADER_SIZE):
            raise ValueError("'hex' is not a whole number of headers")
        step = 2 * HEADER_SIZE
        headers = [BlockHeader.parse(text[i : i + step]) for i in range(0, len(text), step)]
    else:
        raise ValueError("neither 'headers' nor 'hex' in the answer")
    count = result.get("count", len(headers))
    if count != len(headers):
        raise ValueError(f"'count' is {count} but {len(headers)} headers came")
    return headers


def seed_window(
    tip: tuple[int, str] | None, events: Sequence[Event], max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[list[KnownBlock], Tip | None]:
    """The window to resume with, from the stored tip and stored ``block`` events (newest
    first, as ``recent_blocks`` returns them): the tip's block and its ancestors, found by
    ``prev_hash``, lowest first, at most ``max_depth + 1``. Without a stored tip the newest
    event stands for it. The second value is the stored tip when its own event is not
    stored (lost in a crash, pruned, or the store was reset): only a server can fill it."""
    blocks: list[KnownBlock] = []
    for event in events:
        try:
            blocks.append(KnownBlock.from_event_data(event.data))
        except (KeyError, TypeError, ValueError):
            continue  # not a block event we wrote: ignore it
    by_hash: dict[str, KnownBlock] = {}
    for block in blocks:
        by_hash.setdefault(block.hash, block)
    if tip is None:
        if not blocks:
            return [], None
        tip = (blocks[0].height, blocks[0].hash)
    height, block_hash = tip
    top = by_hash.get(block_hash)
    if top is None or top.height != height:
        return [], Tip(height, block_hash)
    window = [top]
    while len(window) <= max_depth:
        parent = by_hash.get(window[-1].prev_hash)
        if parent is None or parent.height != window[-1].height - 1:
            break
        window.append(parent)
    window.reverse()
    return window, None


def linked_run(start: int, run: Sequence[BlockHeader]) -> list[KnownBlock]:
    """The run as known blocks from ``start``, cut at the first header that does not link
    to the one before it."""
    out: list[KnownBlock] = []
    for i, header in enumerate(run):
        if out and header.prev_hash != out[-1].hash:
            break
        out.append(KnownBlock.from_header(start + i, header))
    return out
