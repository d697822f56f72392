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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from embit.hashes import double_sha256

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

HEADER_SIZE = 80
DEFAULT_MAX_DEPTH = 100

_MAINNET_POW_LIMIT = (1 << 224) - 1  # 0x00000000ffff...ff
POW_LIMITS: Mapping[str, int] = {
    "mainnet": _MAINNET_POW_LIMIT,
    "testnet": _MAINNET_POW_LIMIT,
    "testnet4": _MAINNET_POW_LIMIT,
    "signet": 0x00000377AE << 216,
    "regtest": (1 << 255) - 1,
}
"""Each network's proof-of-work limit (Bitcoin Core's ``consensus.powLimit``)."""

RETARGET_INTERVALS: Mapping[str, int | None] = {
    "mainnet": 2016,
    "signet": 2016,
    # testnet and testnet4 allow minimum-difficulty blocks after 20 minutes, so their bits
    # may change between retargets; regtest never retargets (and has no min-difficulty rule
    # worth enforcing).
    "testnet": None,
    "testnet4": None,
    "regtest": None,
}
"""Blocks between difficulty adjustments, where ``bits`` may only change at one."""


# -- proof of work -------------------------------------------------------------------------


def target_from_bits(bits: int) -> int:
    """Decode the compact ``bits`` field into the 256-bit target (Bitcoin Core's
    ``SetCompact``). ``ValueError`` for a value outside 32 bits, a negative encoding or
    one that overflows 256 bits. A zero mantissa decodes to target 0, which no hash meets."""
    if not 0 <= bits <= 0xFFFFFFFF:
        raise ValueError(f"bits must fit in 32 bits, got {bits:#x}")
    size = bits >> 24
    word = bits & 0x007FFFFF
    if size <= 3:
        # Core tests the sign and overflow on the shifted mantissa, so 0x00923456 is 0.
        word >>= 8 * (3 - size)
    if word and bits & 0x00800000:
        raise ValueError(f"bits {bits:08x} encode a negative target")
    if word and (size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32)):
        raise ValueError(f"bits {bits:08x} encode a target above 2**256")
    return word if size <= 3 else word << (8 * (size - 3))


def bits_from_target(target: int) -> int:
    """Encode a target in compact form (Bitcoin Core's ``GetCompact``); the mantissa keeps
    its top 3 bytes, so ``target_from_bits(bits_from_target(t)) <= t``."""
    if not 0 <= target < 1 << 256:
        raise ValueError(f"a target is a 256-bit unsigned number, got {target}")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        compact = target << (8 * (3 - size))
    else:
        compact = target >> (8 * (size - 3))
    if compact & 0x00800000:  # would read as the sign bit: move a byte into the exponent
        compact >>= 8
        size += 1
    return compact | size << 24


def block_work(bits: int) -> int:
    """The expected number of hashes to find a block at ``bits``: ``2**256 // (target+1)``
    (Bitcoin Core's ``GetBlockProof``); 0 for bits that decode to no valid target."""
    try:
        target = target_from_bits(bits)
    except ValueError:
        return 0
    return (1 << 256) // (target + 1) if target else 0


# -- headers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """An 80-byte block header. Hashes are display hex (byte-reversed, as in explorers and
    Electrum's JSON); ``raw`` is the header as serialized."""

    version: int
    prev_hash: str
    merkle_root: str
    time: int
    bits: int
    nonce: int
    hash: str
    raw: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: str | bytes | bytearray) -> BlockHeader:
        """Parse 80 raw bytes or 160 hex characters; ``ValueError`` if it is neither."""
        if isinstance(data, str):
            if len(data) != 2 * HEADER_SIZE:
                raise ValueError(
                    f"a block header is {2 * HEADER_SIZE} hex characters, got {len(data)}"
                )
            try:
                raw = bytes.fromhex(data)
            except ValueError:
                raise ValueError("a block header must be hex: it has non-hex characters") from None
            if len(raw) != HEADER_SIZE:  # fromhex skips whitespace
                raise ValueError("a block header must be hex: it has non-hex characters")
        elif isinstance(data, bytes | bytearray):
            raw = bytes(data)
            if len(raw) != HEADER_SIZE:
                raise ValueError(f"a block header is {HEADER_SIZE} bytes, got {len(raw)}")
        else:
            raise TypeError(f"a block header is bytes or a hex str, got {type(data).__name__}")
        return cls(
            version=int.from_bytes(raw[0:4], "little", signed=True),
            prev_hash=raw[4:36][::-1].hex(),
            merkle_root=raw[36:68][::-1].hex(),
            time=int.from_bytes(raw[68:72], "little"),
            bits=int.from_bytes(raw[72:76], "little"),
            nonce=int.from_bytes(raw[76:80], "little"),
            hash=double_sha256(raw)[::-1].hex(),
            raw=raw,
        )

    def hex(self) -> str:
        """The serialized header as 160 hex characters."""
        return self.raw.hex()


def meets_target(header: BlockHeader) -> bool:
    """Whether the header's hash, read as a little-endian number, is at most the target
    its own ``bits`` encode. False for bits that encode no valid target (negative,
    overflowing or zero): such a header can never be valid."""
    try:
        target = target_from_bits(header.bits)
    except ValueError:
        return False
    return target > 0 and int(header.hash, 16) <= target


def _pow_problem(header: BlockHeader, pow_limit: int) -> str | None:
    """Why ``header`` fails its proof of work, or None if it passes."""
    try:
        target = target_from_bits(header.bits)
    except ValueError as exc:
        return str(exc)
    if target == 0:
        return f"bits {header.bits:08x} encode a zero target"
    if target > pow_limit:
        return f"bits {header.bits:08x} encode a target easier than the network's limit"
    # The display hex is the hash reversed, so reading it big-endian is reading the raw
    # hash little-endian, as the consensus rule does.
    if int(header.hash, 16) > target:
        return f"hash is above the target its bits {header.bits:08x} encode"
    return None


# -- chain state ---------------------------------------------------------------------------


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


# -- updates -------------------------------------------------------------------------------


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
        self._tip: KnownBlock | None = None
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
        self._tip = previous
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
        for i, header in enumerate(headers):
            height = start_height + i
            if i and header.prev_hash != headers[i - 1].hash:
                return Rejected(
                    f"header {header.hash} at height {height} does not link to the header "
                    f"before it in the run"
                )
            problem = _pow_problem(header, self._pow_limit)
            if problem is not None:
                return Rejected(f"header {header.hash} at height {height}: {problem}")

        if self._tip is None:
            # Nothing to link to: adopt the run, after checking it against itself.
            first = KnownBlock.from_header(start_height, headers[0])
            problem = self._retarget_problem(first, start_height + 1, headers[1:])
            if problem is not None:
                return Rejected(problem)
            return self._connect(start_height, headers)
        tip = self._tip
        lowest = min(self._blocks)

        # Skip what cannot be checked (below the window) and what is already known.
        skip = 0
        for header in headers:
            height = start_height + skip
            known = self._blocks.get(height)
            if height < lowest or (known is not None and known.hash == header.hash):
                skip += 1
            else:
                break
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
            if first_height - 1 > tip.height:
                return NeedAncestors(tip.height + 1, first_height)
            if first_height - 1 > lowest:
                # Our block at first_height - 1 is not its parent: the fork is deeper, and
                # could be anywhere in the window, so ask for all of it in one go.
                return NeedAncestors(lowest + 1, first_height)
            return Rejected(
                f"header {new[0].hash} at height {first_height} forks below the window "
                f"(lowest known height {lowest}, max_depth {self._max_depth})"
            )

        problem = self._retarget_problem(parent, first_height, new)
        if problem is not None:
            return Rejected(problem)
        if parent.height == tip.height:
            return self._connect(first_height, new)

        # A competing branch. Most work past the fork point wins; on a tie the branch seen
        # first stays, as in Bitcoin Core. (On regtest all blocks weigh the same, so this
        # is "the longer branch wins".)
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
        interval = self._retarget_interval
        if interval is None:
            return None
        parent_bits = parent.bits
        for i, header in enumerate(new):
            height = first_height + i
            if height % interval:
                if header.bits != parent_bits:
                    return (
                        f"header {header.hash} at height {height} changes bits from "
                        f"{parent_bits:08x} to {header.bits:08x} between retargets"
                    )
            else:
                # Bitcoin Core clamps the adjustment to 4x easier, then to the limit, then
                # truncates to compact form: the result can only be at or below this bound.
                bound = min(self._pow_limit, target_from_bits(parent_bits) * 4)
                if target_from_bits(header.bits) > bound:
                    return (
                        f"header {header.hash} at height {height} eases the target more "
                        f"than 4x at a retarget"
                    )
            parent_bits = header.bits
        return None

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


# -- event data ----------------------------------------------------------------------------


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
