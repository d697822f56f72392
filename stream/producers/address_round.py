"""One address round's work, from the plan to the outcome.

``RoundWorker.work`` reads the histories of the plan's addresses and diffs them
(``address_diff``), holds young losses back, adds confirmation updates, prices every change
(``amounts``) and builds the events. What counts as sent (known transactions, confirmation
counts, reported ``tx.large``) is not recorded here: the producer stores the events, then
calls ``committed`` and records the outcome in its entries, the exactly-once order. What
does change during the work (stale-history counts, loss timers, the amounts cache, counts
read back from the event log) is safe to redo when a round fails.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from batcher.store import ProducerState
from stream.electrum import ServerPool
from stream.electrum.errors import ServerError

from .address_diff import confirmation_updates, diff_history, history_heights, history_status
from .address_log import amounts_from_log, skip_logged
from .amounts import TxCache, price, spent_from, unpriced
from .rounds import (
    HistoryDiff,
    RoundOutcome,
    RoundPlan,
    address_event,
    counts_after,
    hold_losses,
    large_tx_events,
)
from .watched import WatchedAddress, WatchedAddresses

__all__ = ["Incomplete", "RoundWorker"]

logger = logging.getLogger(__name__)

_LARGE_SEEN = 20_000  # txids already reported as tx.large
# A history that does not match the notified status comes from a server that is behind
# the one that notified: asked again this often before it is taken as it is.
_STALE_RETRIES = 25
_INCOMPLETE_RETRIES = 5


class Incomplete(Exception):
    """A transaction the round needs could not be fetched: the round is done again."""


class RoundWorker:
    """Does the work of address rounds for one producer (its entries, its caches)."""

    def __init__(self, pool: ServerPool, store: ProducerState, watched: WatchedAddresses, *,
                 network: str, confirmations: int, large_tx_sats: int, scan_blocks: bool,
                 loss_grace: float) -> None:
        self._pool = pool
        self._store = store
        self._watched = watched
        self._depth = confirmations
        self._large_tx_sats = large_tx_sats
        self._scan_blocks = scan_blocks
        self._loss_grace = loss_grace
        self._txs = TxCache(pool, network)
        self._large_seen: OrderedDict[str, None] = OrderedDict()
        self._incomplete_rounds = 0

    async def work(self, plan: RoundPlan) -> RoundOutcome:
        """The round's diffs, confirmation updates, amounts and events."""
        diffs = await self._diff(plan.entries, plan.tip)
        entries = {e.address: e for e in plan.entries if e.address in diffs}
        counts = self._confirm(plan, entries, diffs)
        await self._price(entries, diffs)
        now = time.time()
        events = [address_event(a, c, entries[a].amounts, now)
                  for a, diff in diffs.items() for c in diff.changes]
        large = large_tx_events(diffs, self._txs, reported=self._large_seen,
                                threshold=self._large_tx_sats,
                                scan_blocks=self._scan_blocks, ts=now)
        return RoundOutcome(entries, diffs, counts, (*events, *large),
                            tuple(e.key for e in large))

    def committed(self, outcome: RoundOutcome) -> None:
        """The outcome's events are stored: its ``tx.large`` ones count as reported."""
        self._large_seen.update((txid, None) for txid in outcome.large)
        while len(self._large_seen) > _LARGE_SEEN:
            self._large_seen.popitem(last=False)
        self._incomplete_rounds = 0

    async def _diff(self, entries: Sequence[WatchedAddress], tip: int
                    ) -> dict[str, HistoryDiff]:
        if not entries:
            return {}
        histories = await self._pool.get_histories_batch([e.address for e in entries])
        diffs: dict[str, HistoryDiff] = {}
        for entry, history in zip(entries, histories, strict=True):
            if not self._watched.is_current(entry):
                continue  # unwatched while fetching
            diff = self._diff_one(entry, history, tip)
            if diff is None:
                continue
            if not entry.log_checked:
                kept = await skip_logged(self._store, entry, diff.changes)
                diff = HistoryDiff(diff.current, tuple(kept))
            diffs[entry.address] = diff
        return diffs

    def _diff_one(self, entry: WatchedAddress, history: Any, tip: int) -> HistoryDiff | None:
        """One history against the entry's known transactions, losses held back; None
        (and dirty again) for a failed or bad answer, or one from a server behind."""
        address = entry.address
        if isinstance(history, ServerError):
            logger.warning("history of %s failed: %s; will retry", address, history)
            self._watched.mark_dirty([address])
            return None
        try:
            current = history_heights(history)
            status = history_status(history)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("bad history for %s: %s; will retry", address, exc)
            self._watched.mark_dirty([address])
            return None
        if not entry.matches(status):
            entry.stale += 1
            if entry.stale < _STALE_RETRIES:
                self._watched.mark_dirty([address])  # ask again (maybe another server)
                return None
            logger.warning("history of %s never matched its status; taking it as is",
                           address)
        entry.stale = 0
        self._watched.clear_reorg_timer(entry)
        held = hold_losses(entry.known, entry.losing,
                           diff_history(entry.known, current, tip), current,
                           now=anyio.current_time(), grace=self._loss_grace)
        entry.losing = held.losing
        if held.recheck is not None:
            self._watched.set_recheck(entry, held.recheck)
        return HistoryDiff(held.current, held.changes)

    def _confirm(self, plan: RoundPlan, entries: dict[str, WatchedAddress],
                 diffs: dict[str, HistoryDiff]) -> dict[str, dict[str, int]]:
        """Add the confirmation updates to ``diffs`` (every address when the tip moved,
        else the changed ones); return the counts sent once the round is stored."""
        counts = {a: counts_after(entries[a].confirmations, d.changes) for a, d in diffs.items()}
        for entry in list(self._watched) if plan.tip_moved else list(entries.values()):
            address = entry.address
            if entry.reorged_until is not None or not self._watched.is_current(entry):
                continue  # heights unknown until the reorg settles; or unwatched
            if entries.setdefault(address, entry) is not entry:
                continue  # re-watched while its history was read: the new one waits
            diff = diffs.get(address)
            known = entry.known if diff is None else diff.current
            # Losses held back keep their heights, but get no updates meanwhile.
            updates, counts[address] = confirmation_updates(
                {t: h for t, h in known.items() if t not in entry.losing},
                counts.get(address, entry.confirmations), plan.tip, self._depth)
            if updates:
                diffs[address] = (diff or HistoryDiff(known, ())).plus(updates)
        return counts

    async def _price(self, entries: Mapping[str, WatchedAddress],
                     diffs: Mapping[str, HistoryDiff]) -> None:
        """Amounts for every change: the transaction itself and the transactions of this
        address that its inputs spend (then, for what no server has, the event log)."""
        wanted: dict[str, None] = {}
        for address, diff in diffs.items():
            wanted.update(unpriced(diff.changes, entries[address].amounts))
        await self._txs.fetch(wanted)
        spent: dict[str, None] = {}
        for address, diff in diffs.items():
            mine = [*diff.current, *entries[address].known]
            spent.update(spent_from(diff.changes, mine, self._txs))
        await self._txs.fetch(spent)
        for address, diff in diffs.items():
            entry = entries[address]
            price(entry.amounts, address, diff.changes, diff.current, self._txs)
            missing = [c.txid for c in diff.changes if c.txid not in entry.amounts]
            if missing:
                await amounts_from_log(self._store, entry, missing)
        unfetched = [t for t in {**wanted, **spent} if t not in self._txs]
        if unfetched:
            # Amounts would be wrong: do the round again (the history may have moved on),
            # unless a server keeps refusing, then go on rather than stall every address.
            self._incomplete_rounds += 1
            if self._incomplete_rounds < _INCOMPLETE_RETRIES:
                raise Incomplete(f"{len(unfetched)} transaction(s) not available, "
                                 f"e.g. {unfetched[0]}")
            logger.warning("going on without %d transaction(s) (amounts may be 0): %s",
                           len(unfetched), ", ".join(unfetched[:5]))
