"""What the header chain remembers of a block, and what accepting headers did to it:
the result type ``Extended | Reorg | Duplicate | Stale | NeedAncestors | Rejected``, and
the ``block`` / ``reorg`` event data made from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from .block_header import BlockHeader

__all__ = [
    "ChainHeader",
    "ChainUpdate",
    "Duplicate",
    "Extended",
    "KnownBlock",
    "NeedAncestors",
    "Rejected",
    "Reorg",
    "Stale",
    "Tip",
    "block_event_data",
    "reorg_event_data",
]



@dataclass(frozen=True, slots=True)
class Tip:
    """A block by height and hash."""

    height: int
    hash: str


@dataclass(frozen=True, slots=True)
class ChainHeader:
    """A header at its height in the chain."""

    height: int
    header: BlockHeader

    @property
    def hash(self) -> str:
        return self.header.hash


@dataclass(frozen=True, slots=True)
class KnownBlock:
    """What the chain remembers of a block in its window: enough to link a child (hash),
    to weigh a branch (bits) and to resume after a restart from stored ``block`` events."""

    height: int
    hash: str
    prev_hash: str
    bits: int

    @classmethod
    def from_header(cls, height: int, header: BlockHeader) -> KnownBlock:
        return cls(height, header.hash, header.prev_hash, header.bits)

    @classmethod
    def from_event_data(cls, data: Mapping[str, Any]) -> KnownBlock:
        """From a stored ``block`` event's data (see :func:`block_event_data`)."""
        return cls(
            int(data["height"]),
            str(data["hash"]),
            str(data["prev_hash"]),
            int(str(data["bits"]), 16),
        )


@dataclass(frozen=True, slots=True)
class Extended:
    """The tip moved forward: ``blocks`` are the new blocks, lowest first."""

    blocks: tuple[ChainHeader, ...]


@dataclass(frozen=True, slots=True)
class Reorg:
    """The tip moved to another branch that forks after ``fork_height``. ``disconnected``
    are the old branch's hashes, old tip first (the order they are undone in);
    ``connected`` the new branch's blocks, lowest first."""

    fork_height: int
    old_tip: Tip
    new_tip: Tip
    disconnected: tuple[str, ...]
    connected: tuple[ChainHeader, ...]


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Every header given is already in the best chain: nothing to emit (this is how one
    block reported by several servers becomes one event)."""


@dataclass(frozen=True, slots=True)
class Stale:
    """Valid headers that do not make a better chain (a branch with no more work than the
    current one, or headers entirely below the window): nothing to emit."""

    reason: str


@dataclass(frozen=True, slots=True)
class NeedAncestors:
    """The first new header links to nothing known: heights ``start`` to ``stop - 1`` are
    missing. Fetch the headers from ``start`` through the tip being added (one
    ``blockchain.block.headers`` call) and pass the run to ``accept_many(start, run)``.
    Asked again for the same tip, ``start`` only goes down, and a fork below the window
    ends in :class:`Rejected`: for a server whose chain holds still, two rounds at most."""

    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """Invalid headers (proof of work, a run that does not link up, a fork deeper than the
    window): nothing changed; the server that sent them should not be trusted."""

    reason: str


ChainUpdate: TypeAlias = Extended | Reorg | Duplicate | Stale | NeedAncestors | Rejected


def block_event_data(height: int, header: BlockHeader) -> dict[str, Any]:
    """A ``block`` event's data. ``bits`` is 8 hex characters, as Bitcoin Core's
    ``getblockheader`` shows it (``"207fffff"``); ``time`` is the header's Unix time."""
    return {
        "height": height,
        "hash": header.hash,
        "prev_hash": header.prev_hash,
        "time": header.time,
        "bits": f"{header.bits:08x}",
    }


def reorg_event_data(reorg: Reorg) -> dict[str, Any]:
    """A ``reorg`` event's data: the fork point, both tips, and the hashes of the blocks
    taken off (old tip first) and put on (lowest first)."""
    return {
        "fork_height": reorg.fork_height,
        "old_tip": {"height": reorg.old_tip.height, "hash": reorg.old_tip.hash},
        "new_tip": {"height": reorg.new_tip.height, "hash": reorg.new_tip.hash},
        "disconnected": list(reorg.disconnected),
        "connected": [block.hash for block in reorg.connected],
    }
