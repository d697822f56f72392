"""The address producer: watched addresses -> ``address`` (and ``tx.large``) events.

Every watched address is subscribed by scripthash on the pool (spread over servers, moved
when one goes). A status change, a moved subscription, an overflow or a start-up marks the
address *dirty*; one loop then handles dirty addresses in rounds:

1. fetch their histories in one pool batch and diff each against its known transactions
   (``address_diff``);
2. fetch the transactions that are new, and the ones their inputs spend *from this
   address* (they are in its history), in de-duplicated pool batches, to compute
   ``received_sats`` / ``sent_sats`` (``amounts``);
3. emit the events and wait until the batcher has stored them; only then record the new
   known transactions in the store.

One loop means changes to one address are handled strictly in order, while one round
covers many addresses with a few batched requests. Step 3's order makes a crash safe: an
event is never counted as sent before it is stored; events stored just before a crash, but
not yet recorded, are recognised in the event log on the first round after a restart and
not sent again (``address_log``).

Reorgs: a round waits (briefly) until the block producer has caught up with the servers'
tip, so the ``reorg`` event is always emitted before the ``address`` events it causes.

Start-up: ``run`` reports started after one query (the stored tip); the watch list and
its stored state are read in bulk in the background (``restore``), and subscribed a few
chunks per round, so rounds (a new block's confirmation updates) go on meanwhile.

Each address's state is one ``WatchedAddress`` (``watched``): watching adds an entry,
unwatching removes it. A round's work is ``address_round``, its named types and pure steps
``rounds``; this module keeps the inputs, the loop, and the recording after each round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from batcher.events import Event
from batcher.store import ProducerState, StoreError
from stream.electrum import ServerPool
from stream.electrum.errors import ElectrumError
from stream.electrum.subscriptions import (
    Moved,
    Overflowed,
    ScripthashSubscription,
    StatusNotification,
)

from .address_round import Incomplete, RoundWorker
from .base import ChainChange, EventSink
from .headers import Reorg
from .restore import RESTORE_PAGE, Restore
from .rounds import RoundOutcome, RoundPlan, large_tx_data
from .watched import WatchedAddresses

__all__ = ["AddressProducer", "CommittingSink", "large_tx_data"]

logger = logging.getLogger(__name__)

_SUBSCRIBE_CHUNK = 1000
# Chunks subscribed per round: a round with 100k addresses to subscribe (a restart) must
# not hold back the rounds behind it (new blocks, notifications) until all are done.
_SUBSCRIBE_CHUNKS_PER_ROUND = 5
# How long a round waits when a history came from a server behind the notifying one.
_STALE_DELAY = 0.1


class CommittingSink(EventSink, Protocol):
    async def emit_committed(self, events: Sequence[Event]) -> None:
        """Emit and wait until every event is in a stored batch."""
        ...


class AddressProducer:
    """Watches addresses; see the module docstring."""

    def __init__(
        self,
        pool: ServerPool,
        store: ProducerState,
        sink: CommittingSink,
        *,
        network: str,
        confirmations: int = 6,
        large_tx_sats: int = 1_000_000_000,
        scan_blocks: bool = False,
        tip_wait: float = 3.0,
        reorg_wait: float = 10.0,
        loss_grace: float = 2.0,
        round_max: int = 500,
        retry_delay: float = 1.0,
        restore_page: int = RESTORE_PAGE,
    ) -> None:
        self._pool = pool
        self._store = store
        self._sink = sink
        self._depth = confirmations
        self._tip_wait = tip_wait
        self._reorg_wait = reorg_wait
        self._round_max = round_max
        self._retry_delay = retry_delay
        self._restore_page = restore_page
        self._watched = WatchedAddresses()
        self._worker = RoundWorker(
            pool, store, self._watched, network=network, confirmations=confirmations,
            large_tx_sats=large_tx_sats, scan_blocks=scan_blocks, loss_grace=loss_grace)
        self._changes: list[ChainChange] = []
        # A round that saw the tip move and then failed: the next one must still update
        # the confirmations of every address, not only of the dirty ones it re-marks.
        self._tip_move_pending = False
        self._tip = 0
        self._subs: ScripthashSubscription | None = None
        self._restore: Restore | None = None  # from run() on
        self._busy = True  # until the loop first waits for work
        self._wake = anyio.Event()
        self._chain_moved = anyio.Event()
        self._counters = {"rounds": 0, "events": 0, "errors": 0}

    # -- inputs ------------------------------------------------------------------------
    def on_chain(self, change: ChainChange) -> None:
        self._changes.append(change)
        self._chain_moved.set()
        self._wake.set()

    def watch(self, addresses: Iterable[str]) -> None:
        """Start watching (canonical, already stored) addresses."""
        for address in addresses:
            if self._restore is not None and self._restore.is_pending(address):
                continue  # watched already: its stored state is on the way
            self._watched.add(address, self._pool.scripthash(address))
        self._wake.set()

    def unwatch(self, address: str) -> None:
        """Stop watching (the store has already forgotten it)."""
        if self._restore is not None:
            self._restore.forget(address)
        if self._watched.remove(address):
            self._wake.set()

    def carrier(self, address: str) -> str | None:
        """The url of the server the address is subscribed on (None: not (yet) placed)."""
        entry = self._watched.get(address)
        if self._subs is None or entry is None:
            return None
        return self._subs.carrier(entry.scripthash)

    @property
    def watching(self) -> int:
        return len(self._watched) + self._restoring()

    def _restoring(self) -> int:
        return 0 if self._restore is None else self._restore.pending

    @property
    def idle(self) -> bool:
        """Nothing to do until a notification or a chain change comes: no round running
        or due, nothing dirty, to (un)subscribe or on a timer. What tests wait for to
        know that nothing more will be emitted for what happened so far. Read-only: it
        peeks at the timers (``next_deadline`` would also prune the timer queue)."""
        return not (self._busy or self._wake.is_set() or self._changes
                    or self._restore is None or not self._restore.done
                    or self._tip_move_pending
                    or self._watched.dirty_count or self._watched.pending_subscriptions
                    or any(entry.deadline() < math.inf for entry in self._watched))

    def stats(self) -> dict[str, int]:
        return {**self._counters, "watching": self.watching,
                "restoring": self._restoring(),
                "to_subscribe": self._watched.subscribe_backlog,
                "dirty": self._watched.dirty_count, "tip": self._tip}

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # One query before started: the stored tip, read before the block producer moves
        # it (the confirmation counts already sent are rebuilt from it).
        tip = await self._store.get_tip()
        self._tip = tip[0] if tip else 0
        restore = self._restore = Restore(self._store, tip=self._tip, depth=self._depth,
                                          page=self._restore_page)
        task_status.started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run_restore, restore)
            async with self._pool.subscribe_scripthashes() as subs:
                self._subs = subs
                tg.start_soon(self._listen, subs)
                await self._loop(subs)

    async def _run_restore(self, restore: Restore) -> None:
        """The stored watch list, a page at a time, each address with its known
        transactions (to be compared with the event log before its first events) and the
        stored amounts of those that may still change (not fetched again)."""
        started = anyio.current_time()
        listed = False
        while True:
            try:
                if not listed:
                    await restore.read_list(self._watched)
                    listed = True
                page = await restore.next_page()
            except StoreError as exc:
                logger.warning("restoring the watch list failed, retrying in %.1fs: %s",
                               self._retry_delay, exc)
                await anyio.sleep(self._retry_delay)
                continue
            except Exception:
                # A bug must not stop the producer (and the server) for good: retry later.
                logger.exception("restoring the watch list failed unexpectedly; retrying "
                                 "in %.1fs", self._retry_delay)
                await anyio.sleep(self._retry_delay)
                continue
            if page is None:
                break
            entries = {}
            for address in restore.still_pending(page):
                entry = self._watched.add(address, self._pool.scripthash(address))
                if entry is not None:
                    entries[address] = entry
            restore.take(page, entries)
            self._wake.set()
        logger.info("restored %d watched addresses in %.2f s (subscribing in the background)",
                    len(self._watched), anyio.current_time() - started)
        self._wake.set()

    async def _listen(self, subs: ScripthashSubscription) -> None:
        async for note in subs:
            if isinstance(note, StatusNotification):
                self._mark_scripthashes({note.scripthash: note.status})
            elif isinstance(note, Moved):
                self._mark_scripthashes(note.statuses)
            elif isinstance(note, Overflowed):
                logger.warning("%d address notifications dropped; reconciling every address",
                               note.dropped)
                self._watched.forget_statuses()  # the notified statuses are out of date
                self._watched.mark_all_dirty()
            self._wake.set()

    def _mark_scripthashes(self, statuses: Mapping[str, str | None]) -> None:
        for sh, status in statuses.items():
            entry = self._watched.by_scripthash(sh)
            if entry is not None:
                entry.expect(status)
                entry.stale = 0
                self._watched.clear_reorg_timer(entry)
                self._watched.mark_dirty([entry.address])

    async def _loop(self, subs: ScripthashSubscription) -> None:
        while True:
            self._busy = False
            with anyio.move_on_after(self._watched.next_deadline() - anyio.current_time()):
                await self._wake.wait()
            self._busy = True
            self._wake = anyio.Event()
            try:
                await self._round(subs)
            except (ElectrumError, StoreError, Incomplete) as exc:
                self._counters["errors"] += 1
                logger.warning("address round failed, retrying in %.1fs: %s",
                               self._retry_delay, exc)
                await anyio.sleep(self._retry_delay)
                self._wake.set()
            except Exception:
                # A bug must not stop every address for good: log it, retry later.
                self._counters["errors"] += 1
                logger.exception("address round failed unexpectedly; retrying in %.1fs",
                                 self._retry_delay)
                await anyio.sleep(self._retry_delay)
                self._wake.set()
            else:
                if self._watched.any_stale():
                    await anyio.sleep(_STALE_DELAY)
                if (self._watched.dirty_count or self._changes
                        or self._watched.subscribe_backlog):
                    self._wake.set()

    # -- one round ---------------------------------------------------------------------
    async def _round(self, subs: ScripthashSubscription) -> None:
        """One round. Nothing of the producer's state changes before the round's events
        are stored: a round that fails is simply done again."""
        self._counters["rounds"] += 1
        await self._update_subscriptions(subs)
        self._watched.expire(anyio.current_time())
        tip_moved = self._apply_chain_changes() or self._tip_move_pending
        self._tip_move_pending = False
        if self._watched.dirty_count:
            tip_moved = await self._await_tip() or tip_moved
        plan = RoundPlan(tuple(self._watched.take_dirty(self._round_max)), tip_moved,
                         self._tip)
        logger.debug("round %d: %d dirty address(es), tip %d", self._counters["rounds"],
                     len(plan.entries), self._tip)
        try:
            outcome = await self._worker.work(plan)
            if outcome.events:
                logger.debug("emitting %d event(s)", len(outcome.events))
                await self._sink.emit_committed(outcome.events)
                self._counters["events"] += len(outcome.events)
        except BaseException:
            self._watched.mark_dirty(e.address for e in plan.entries)  # next round
            self._tip_move_pending = plan.tip_moved
            raise
        await self._commit(outcome)  # stored: now the round counts

    async def _commit(self, outcome: RoundOutcome) -> None:
        """Record what the stored round sent, for the entries still watched."""
        self._worker.committed(outcome)
        for address, counts in outcome.confirmations.items():
            if self._watched.is_current(entry := outcome.entries[address]):
                entry.confirmations = dict(counts)
        for address, diff in outcome.diffs.items():
            entry = outcome.entries[address]
            if not self._watched.is_current(entry):
                continue  # unwatched meanwhile
            entry.log_checked = True
            if entry.known != diff.current:
                entry.known = dict(diff.current)
                await self._store.set_known_txs(address, entry.known)

    async def _update_subscriptions(self, subs: ScripthashSubscription) -> None:
        gone = self._watched.take_unsubscribe()
        if gone:
            await subs.remove(gone)
        for _ in range(_SUBSCRIBE_CHUNKS_PER_ROUND):
            chunk = self._watched.to_subscribe(_SUBSCRIBE_CHUNK)
            if not chunk:
                break
            statuses = await subs.add_addresses(chunk)
            for address in chunk:
                self._watched.subscribed(address)
                entry = self._watched.get(address)
                if entry is None:
                    continue  # unwatched meanwhile
                status = statuses.get(entry.scripthash)
                entry.expect(status)
                if status is not None or entry.known:
                    self._watched.mark_dirty([address])
            logger.debug("subscribed %d address(es)", len(chunk))

    def _apply_chain_changes(self) -> bool:
        """Take the queued chain changes: the new tip and, for a reorg, the addresses it
        may have touched. True when the tip moved."""
        moved = False
        changes, self._changes = self._changes, []
        for change in changes:
            if isinstance(change, Reorg):
                fork = change.fork_height
                deadline = anyio.current_time() + self._reorg_wait
                for entry in self._watched:
                    # Already dirty: notified after the server applied the reorg.
                    if not self._watched.is_dirty(entry.address) and any(
                            h > fork for h in entry.known.values()):
                        self._watched.set_reorg_timer(entry, deadline)
                blocks = change.connected
            else:
                blocks = change.blocks
            for block in blocks:
                self._tip = block.height
                moved = True
        self._chain_moved = anyio.Event()
        return moved

    async def _await_tip(self) -> bool:
        """Wait (at most ``tip_wait``) until the block producer has the servers' tip;
        True if the tip moved meanwhile."""
        moved = False
        with anyio.move_on_after(self._tip_wait):
            while (target := self._pool.servers_tip()) is not None and self._tip < target:
                await self._chain_moved.wait()
                moved = self._apply_chain_changes() or moved
        return moved
