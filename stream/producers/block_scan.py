"""Block scanning: every transaction of each new block, a ``tx.large`` event for the big ones.

Electrum has no "transactions of a block" call, so a block is read in two passes:

1. its txids, by position (``blockchain.transaction.id_from_pos [height, pos]``) in pool
   batches of growing size, until a position runs past the last transaction; the list is
   then checked against the header's merkle root, which proves it complete, in order and
   from the expected block (not from a lagging server or another branch);
2. the transactions themselves (``get_transactions_batch``) in slices, parsed in a worker
   thread, each checked to hash to the txid asked for.

A transaction whose outputs total at least ``threshold_sats`` gets one ``tx.large`` event
(``key`` = txid; data: txid, height, total_out_sats, outputs ``[{address, value_sats}]``).
The coinbase is scanned like any other transaction: a coinbase paying the threshold or more
is reported too. A block's events are emitted together once the whole block is scanned,
so a retried block never emits twice.

Failures (no server answered, a server without the block, a malformed answer, txids that
do not match the merkle root) retry the block after each of ``retry_delays``, keeping what
was already verified; then the block is skipped with a WARNING. Reorgs: a reorg reported
through ``on_chain`` drops the disconnected blocks still queued, and a scan under way of one
of them emits nothing. A reorg the scanner has not been told about yet shows as txids that
do not hash to the expected header's merkle root: retried, then skipped. Events already
emitted for a block later reorged away stand (the ``reorg`` event names the block).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus
from embit.hashes import double_sha256

from batcher.events import Event
from stream.electrum import ElectrumError, ServerError, ServerPool

from .base import ChainChange, EventSink, make_event
from .headers import ChainHeader, Extended
from .txparse import ParsedTx, parse_tx

__all__ = [
    "BlockScanner",
    "ScanFailed",
    "is_end_of_block",
    "merkle_root",
    "page_txids",
]

logger = logging.getLogger(__name__)

ID_FROM_POS: Final = "blockchain.transaction.id_from_pos"
# What servers answer for a position past a block's last transaction: ElectrumX ("no tx at
# position 1,234 in block at height 5", code 1), Fulcrum ("No transaction at position 1234
# for height 5") and electrs ("invalid tx_pos 1234 in block at height 5"). Fulcrum says the
# same for a block it does not have yet: the merkle check catches that.
_END_MARKERS: Final = ("no tx at position", "no transaction at position", "invalid tx_pos")
# No block holds more (4 MWU / the smallest transaction's weight is ~16 000).
_MAX_POSITIONS: Final = 100_000
# Hashes of blocks reorged away, remembered to drop a scan that was already under way.
_GONE_MEMORY: Final = 1_000


class ScanFailed(Exception):
    """This attempt at a block failed for a reason that may pass (a lagging or failing
    server, another branch): try the block again later."""


def is_end_of_block(item: object) -> bool:
    """Whether an ``id_from_pos`` answer says the position is past the block's end."""
    if not isinstance(item, ServerError):
        return False
    message = item.message.lower()
    return any(marker in message for marker in _END_MARKERS)


def page_txids(start: int, answers: Sequence[object]) -> tuple[list[str], bool]:
    """The txids of one page of ``id_from_pos`` answers (positions ``start``, ``start+1``,
    ...) up to the block's end: ``(txids, ended)``. Answers after the first end-of-block
    error are ignored. ``ScanFailed`` for any other error before it (a server without the
    block answers "db error ... not on disk"), a malformed txid, or an end at position 0
    (every block has a coinbase)."""
    txids: list[str] = []
    for offset, item in enumerate(answers):
        if is_end_of_block(item):
            if start + offset == 0:
                raise ScanFailed(f"the server has no transaction at position 0: {item}")
            return txids, True
        if not _is_txid(item):
            raise ScanFailed(f"position {start + offset}: {item!r}")
        assert isinstance(item, str)
        txids.append(item.lower())
    return txids, False


def merkle_root(txids: Sequence[str]) -> str:
    """The merkle root (display hex, as in a header) of a block's txids, in block order."""
    if not txids:
        raise ValueError("a block has at least one transaction")
    level = [bytes.fromhex(txid)[::-1] for txid in txids]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [double_sha256(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0][::-1].hex()


def _is_txid(item: object) -> bool:
    if not isinstance(item, str) or len(item) != 64:
        return False
    try:
        bytes.fromhex(item)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class _BlockScan:
    """One block's progress, kept across attempts so a retry redoes only what failed."""

    block: ChainHeader
    txids: list[str] | None = None  # verified against the merkle root
    next_slice: int = 0  # index in txids of the first transaction not yet checked
    large: list[ParsedTx] = field(default_factory=list)


class BlockScanner:
    """Scans each block the block producer reports (``on_chain``) for large transactions.

    ``page_size`` is the first ``id_from_pos`` page (it doubles up to ``max_page``);
    ``slice_size`` is how many raw transactions are held at once; ``retry_delays`` are the
    waits between attempts at a block that failed (then it is skipped with a WARNING).
    """

    def __init__(
        self,
        pool: ServerPool,
        sink: EventSink,
        *,
        network: str,
        threshold_sats: int,
        page_size: int = 100,
        max_page: int = 1_000,
        slice_size: int = 500,
        retry_delays: Sequence[float] = (1.0, 5.0, 15.0),
    ) -> None:
        if threshold_sats < 0:
            raise ValueError(f"threshold_sats must be >= 0, got {threshold_sats}")
        if not 1 <= page_size <= max_page:
            raise ValueError(f"need 1 <= page_size <= max_page, got {page_size}, {max_page}")
        if slice_size < 1:
            raise ValueError(f"slice_size must be >= 1, got {slice_size}")
        self._pool = pool
        self._sink = sink
        self._network = network
        self._threshold = threshold_sats
        self._page_size = page_size
        self._max_page = max_page
        self._slice_size = slice_size
        self._retry_delays = tuple(retry_delays)
        self._queue: deque[ChainHeader] = deque()
        self._gone: dict[str, None] = {}  # insertion-ordered set, bounded
        self._wake: anyio.Event | None = None
        # Figures for stats and tests.
        self.scanned = 0
        self.skipped = 0
        self.emitted = 0

    # -- the block producer's side ---------------------------------------------------------
    def on_chain(self, change: ChainChange) -> None:
        """Queue the change's new blocks (never waits). A reorg also drops queued blocks it
        disconnected, and a scan under way of one of them emits nothing."""
        if isinstance(change, Extended):
            blocks: Iterable[ChainHeader] = change.blocks
        else:
            gone = set(change.disconnected)
            for block_hash in change.disconnected:
                self._gone[block_hash] = None
            while len(self._gone) > _GONE_MEMORY:
                del self._gone[next(iter(self._gone))]
            kept = [b for b in self._queue if b.hash not in gone]
            self._queue.clear()
            self._queue.extend(kept)
            blocks = change.connected
        for block in blocks:
            self._gone.pop(block.hash, None)  # back on the best chain
            self._queue.append(block)
        if self._wake is not None:
            self._wake.set()

    @property
    def queued(self) -> tuple[ChainHeader, ...]:
        """Blocks waiting to be scanned, in scan order (not the one being scanned)."""
        return tuple(self._queue)

    # -- the loop --------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Scan queued blocks in chain order, one at a time, until cancelled."""
        task_status.started()
        while True:
            if not self._queue:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            await self.scan(self._queue.popleft())

    async def scan(self, block: ChainHeader) -> None:
        """Scan one block and emit its ``tx.large`` events; a block that still fails after
        the retries is logged and skipped. Never raises (except cancellation)."""
        state = _BlockScan(block)
        started = time.monotonic()
        delays = iter(self._retry_delays)
        while True:
            if block.hash in self._gone:
                logger.info("block %d %s was reorged away: scan dropped", block.height,
                            block.hash)
                return
            try:
                await self._attempt(state)
                break
            except (ScanFailed, ElectrumError) as exc:
                problem: BaseException = exc
            except Exception as exc:  # a bug must not stop the scanner
                logger.exception("scanning block %d %s failed", block.height, block.hash)
                problem = exc
            delay = next(delays, None)
            if delay is None:
                self.skipped += 1
                logger.warning(
                    "block %d %s skipped: not scanned after %d attempts (%s)",
                    block.height, block.hash, len(self._retry_delays) + 1, problem,
                )
                return
            logger.info("scanning block %d failed (%s); retrying in %.1fs", block.height,
                        problem, delay)
            await anyio.sleep(delay)
        if block.hash in self._gone:
            logger.info("block %d %s was reorged away during its scan: nothing emitted",
                        block.height, block.hash)
            return
        assert state.txids is not None
        events = [self._event(tx, block.height) for tx in state.large]
        if events:
            await self._sink.emit(events)
        self.scanned += 1
        self.emitted += len(events)
        logger.info("scanned block %d (%d transactions) in %.2fs: %d large", block.height,
                    len(state.txids), time.monotonic() - started, len(events))

    def _event(self, tx: ParsedTx, height: int) -> Event:
        return make_event("tx.large", tx.txid, {
            "txid": tx.txid,
            "height": height,
            "total_out_sats": tx.total_out_sats,
            "outputs": tx.outputs_json(),
        })

    async def _attempt(self, state: _BlockScan) -> None:
        if state.txids is None:
            state.txids = await self.block_txids(state.block)
        txids = state.txids
        while state.next_slice < len(txids):
            part = txids[state.next_slice : state.next_slice + self._slice_size]
            raws = await self._pool.get_transactions_batch(part)
            parsed = await anyio.to_thread.run_sync(self._parse_slice, part, raws)
            state.large.extend(tx for tx in parsed if tx.total_out_sats >= self._threshold)
            state.next_slice += len(part)

    def _parse_slice(self, txids: Sequence[str], raws: Sequence[Any]) -> list[ParsedTx]:
        """Parse (in a worker thread: embit is pure Python) and check each transaction."""
        out = []
        for txid, raw in zip(txids, raws, strict=True):
            if not isinstance(raw, str):
                raise ScanFailed(f"transaction {txid}: {raw}")
            try:
                tx = parse_tx(raw, self._network)
            except ValueError as exc:
                raise ScanFailed(f"transaction {txid}: {exc}") from None
            if tx.txid != txid:
                raise ScanFailed(f"asked for transaction {txid}, got {tx.txid}")
            out.append(tx)
        return out

    async def block_txids(self, block: ChainHeader) -> list[str]:
        """Every txid of ``block``, in block order, checked against its merkle root."""
        txids: list[str] = []
        size = self._page_size
        while True:
            start = len(txids)
            if start >= _MAX_POSITIONS:
                raise ScanFailed(f"no end of block after {start} positions")
            answers = await self._pool.batch(
                (ID_FROM_POS, [block.height, pos]) for pos in range(start, start + size)
            )
            page, ended = page_txids(start, answers)
            txids.extend(page)
            if ended:
                break
            size = min(2 * size, self._max_page)
        if len(set(txids)) != len(txids) or merkle_root(txids) != block.header.merkle_root:
            raise ScanFailed(
                f"the {len(txids)} txids found at height {block.height} are not block "
                f"{block.hash}'s (a lagging server, or another branch)"
            )
        return txids
