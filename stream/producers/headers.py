"""The header chain: parse block headers, check their proof of work, follow the best tip.

Pure: no I/O, no clock, no aiorpcx. The block producer feeds it what the Electrum servers
report (``blockchain.headers.subscribe`` notifications, ``blockchain.block.headers`` runs)
and turns each :data:`ChainUpdate` into events::

    chain = HeaderChain.for_network("regtest")
    update = chain.accept(height, BlockHeader.parse(header_hex))
    match update:
        case Extended(blocks):        # one `block` event per ChainHeader
        case Reorg():                 # one `reorg` event, then a `block` event per connected
        case Duplicate() | Stale():   # nothing: already known, or a branch that is not best
        case NeedAncestors(start, stop):
            # fetch headers from start through the tip, then accept_many(start, run)
        case Rejected(reason):        # the server sent something invalid: distrust it

What is checked: each header's hash meets the target encoded in its own ``bits``, that
target is no easier than the network's proof-of-work limit, each header links to its
parent, and (where the network retargets every ``retarget_interval`` blocks without
special rules, i.e. mainnet and signet) ``bits`` stays the same between retargets and eases
by at most 4x at one. The best branch is the one with the most chainwork past the fork
point (``sum(2**256 // (target + 1))``; on regtest every block has the same work, so that
is the longest branch). Not checked (they need more than the window or a clock): the
exact retarget value, median-time-past and future-time rules, checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .block_header import HEADER_SIZE, BlockHeader, meets_target
from .chain_updates import (
    ChainHeader,
    ChainUpdate,
    Duplicate,
    Extended,
    KnownBlock,
    NeedAncestors,
    Rejected,
    Reorg,
    Stale,
    Tip,
    block_event_data,
    reorg_event_data,
)
from .pow import (
    POW_LIMITS,
    RETARGET_INTERVALS,
    bits_from_target,
    block_work,
    pow_problem,
    retarget_problem,
    target_from_bits,
)

# The public names of the header core, importable from here as before the split into
# ``pow`` (the rules on numbers), ``block_header`` and ``chain_updates`` (the result types).
__all__ = [
    "DEFAULT_MAX_DEPTH",
    "HEADER_SIZE",
    "POW_LIMITS",
    "RETARGET_INTERVALS",
    "BlockHeader",
    "ChainHeader",
    "ChainUpdate",
    "Duplicate",
    "Extended",
    "HeaderChain",
    "KnownBlock",
    "NeedAncestors",
    "Rejected",
    "Reorg",
    "Stale",
    "Tip",
    "bits_from_target",
    "block_event_data",
    "block_work",
    "meets_target",
    "reorg_event_data",
    "target_from_bits",
]

DEFAULT_MAX_DEPTH = 100


class HeaderChain:
    """The best chain's recent blocks, by height, and the rules for moving its tip.

    ``max_depth`` bounds memory and the deepest reorg followed (a fork point must still
    be in the window: the tip and the ``max_depth`` blocks below it). ``pow_limit`` is the
    easiest target a header may claim; ``retarget_interval`` (None: no check) makes ``bits``
    constant between difficulty adjustments. ``known`` seeds the window, e.g. from stored
    ``block`` events after a restart: consecutive heights, each linking to the one before.
    An empty chain adopts the first headers it is given as they are.
    """

    def __init__(
        self,
        known: Iterable[KnownBlock] = (),
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        pow_limit: int = (1 << 256) - 1,
        retarget_interval: int | None = None,
    ) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        if not 0 < pow_limit < 1 << 256:
            raise ValueError(f"pow_limit must be a positive 256-bit number, got {pow_limit}")
        if retarget_interval is not None and retarget_interval < 1:
            raise ValueError(f"retarget_interval must be >= 1 or None, got {retarget_interval}")
        self._max_depth = max_depth
        self._pow_limit = pow_limit
        self._retarget_interval = retarget_interval
        self._blocks: dict[int, KnownBlock] = {}
        previous: KnownBlock | None = None
        for block in known:
            if previous is not None and (
                block.height != previous.height + 1 or block.prev_hash != previous.hash
            ):
                raise ValueError(
                    f"known blocks must be consecutive and linked: block {block.hash} at "
                    f"height {block.height} does not follow {previous.hash} at height "
                    f"{previous.height}"
                )
            self._blocks[block.height] = block
            previous = block
        self._tip: KnownBlock | None = previous
        self._trim()

    @classmethod
    def for_network(
        cls,
        network: str,
        known: Iterable[KnownBlock] = (),
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> HeaderChain:
        """A chain with ``network``'s proof-of-work limit and retarget rule."""
        if network not in POW_LIMITS:
            raise ValueError(f"unknown network {network!r}; expected one of {sorted(POW_LIMITS)}")
        return cls(
            known,
            max_depth=max_depth,
            pow_limit=POW_LIMITS[network],
            retarget_interval=RETARGET_INTERVALS[network],
        )

    @property
    def max_depth(self) -> int:
        return self._max_depth

    @property
    def tip(self) -> Tip | None:
        """The best chain's tip, or None before the first header."""
        return None if self._tip is None else Tip(self._tip.height, self._tip.hash)

    def hash_at(self, height: int) -> str | None:
        """The best chain's hash at ``height``, if it is in the window."""
        block = self._blocks.get(height)
        return None if block is None else block.hash

    def known_blocks(self) -> tuple[KnownBlock, ...]:
        """The window, lowest first (what to persist to resume with)."""
        return tuple(self._blocks[h] for h in sorted(self._blocks))

    def __len__(self) -> int:
        return len(self._blocks)

    def accept(self, height: int, header: BlockHeader) -> ChainUpdate:
        """Take one header a server reported at ``height`` (a tip notification)."""
        return self.accept_many(height, (header,))

    def accept_many(self, start_height: int, headers: Sequence[BlockHeader]) -> ChainUpdate:
        """Take a run of consecutive headers, the first at ``start_height``.

        Headers already in the best chain are skipped; the rest must link to a block in
        the window. Nothing changes unless the result is :class:`Extended` or
        :class:`Reorg`.
        """
        if start_height < 0:
            raise ValueError(f"start_height must be >= 0, got {start_height}")
        if not headers:
            raise ValueError("accept_many needs at least one header")
        problem = self._run_problem(start_height, headers)
        if problem is not None:
            return Rejected(problem)
        if self._tip is None:
            # Nothing to link to: adopt the run, after checking it against itself.
            first = KnownBlock.from_header(start_height, headers[0])
            problem = self._retarget_problem(first, start_height + 1, headers[1:])
            if problem is not None:
                return Rejected(problem)
            return self._connect(start_height, headers)
        lowest = min(self._blocks)
        skip = self._known_prefix(start_height, headers, lowest)
        if skip == len(headers):
            if start_height + skip - 1 < lowest:
                return Stale(
                    f"headers end at height {start_height + skip - 1}, "
                    f"below the window (from {lowest})"
                )
            return Duplicate()
        first_height = start_height + skip
        new = headers[skip:]
        parent = self._blocks.get(first_height - 1)
        if parent is None or parent.hash != new[0].prev_hash:
            return self._unlinked(first_height, new[0], lowest)
        problem = self._retarget_problem(parent, first_height, new)
        if problem is not None:
            return Rejected(problem)
        if parent.height == self._tip.height:
            return self._connect(first_height, new)
        return self._compete(parent, first_height, new)

    def _run_problem(self, start_height: int, headers: Sequence[BlockHeader]) -> str | None:
        """Why the run cannot be true on its own (links, proof of work), or None."""
        for i, header in enumerate(headers):
            height = start_height + i
            if i and header.prev_hash != headers[i - 1].hash:
                return (
                    f"header {header.hash} at height {height} does not link to the header "
                    f"before it in the run"
                )
            problem = pow_problem(header, self._pow_limit)
            if problem is not None:
                return f"header {header.hash} at height {height}: {problem}"
        return None

    def _known_prefix(self, start_height: int, headers: Sequence[BlockHeader], lowest: int
                      ) -> int:
        """How many leading headers to skip: below the window (they cannot be checked)
        or already in the best chain."""
        skip = 0
        for header in headers:
            height = start_height + skip
            known = self._blocks.get(height)
            if height < lowest or (known is not None and known.hash == header.hash):
                skip += 1
            else:
                break
        return skip

    def _unlinked(self, first_height: int, first: BlockHeader, lowest: int) -> ChainUpdate:
        """The first new header's parent is not the window's block below it."""
        assert self._tip is not None
        if first_height - 1 > self._tip.height:
            return NeedAncestors(self._tip.height + 1, first_height)
        if first_height - 1 > lowest:
            # Our block at first_height - 1 is not its parent: the fork is deeper, and
            # could be anywhere in the window, so ask for all of it in one go.
            return NeedAncestors(lowest + 1, first_height)
        return Rejected(
            f"header {first.hash} at height {first_height} forks below the window "
            f"(lowest known height {lowest}, max_depth {self._max_depth})"
        )

    def _compete(self, parent: KnownBlock, first_height: int, new: Sequence[BlockHeader]
                 ) -> ChainUpdate:
        """A competing branch on ``parent``. Most work past the fork point wins; on a tie
        the branch seen first stays, as in Bitcoin Core. (On regtest all blocks weigh the
        same, so this is "the longer branch wins".)"""
        tip = self._tip
        assert tip is not None
        old = [self._blocks[h] for h in range(parent.height + 1, tip.height + 1)]
        new_work = sum(block_work(h.bits) for h in new)
        old_work = sum(block_work(b.bits) for b in old)
        if new_work <= old_work:
            return Stale(
                f"branch forking after height {parent.height} has {len(new)} blocks and no "
                f"more work than the best chain's {len(old)}"
            )
        for block in old:
            del self._blocks[block.height]
        connected = self._connect(first_height, new)
        assert self._tip is not None
        return Reorg(
            fork_height=parent.height,
            old_tip=Tip(tip.height, tip.hash),
            new_tip=Tip(self._tip.height, self._tip.hash),
            disconnected=tuple(b.hash for b in reversed(old)),
            connected=connected.blocks,
        )

    def _retarget_problem(
        self, parent: KnownBlock, first_height: int, new: Sequence[BlockHeader]
    ) -> str | None:
        return retarget_problem(parent.bits, first_height, new,
                                interval=self._retarget_interval, pow_limit=self._pow_limit)

    def _connect(self, first_height: int, new: Sequence[BlockHeader]) -> Extended:
        """Put ``new`` on top of the window (its parent is the window's top) as the tip."""
        blocks = tuple(ChainHeader(first_height + i, h) for i, h in enumerate(new))
        for block in blocks:
            self._blocks[block.height] = KnownBlock.from_header(block.height, block.header)
        last = blocks[-1]
        self._tip = self._blocks[last.height]
        self._trim()
        return Extended(blocks)

    def _trim(self) -> None:
        if self._tip is None:
            return
        floor = self._tip.height - self._max_depth
        for height in [h for h in self._blocks if h < floor]:
            del self._blocks[height]
