"""The address producer: watched addresses -> ``address`` (and ``tx.large``) events.

Every watched address is subscribed by scripthash on the pool (spread over servers, moved
when one goes). A status change, a moved subscription, an overflow or a start-up marks the
address *dirty*; one loop then handles dirty addresses in rounds:

1. fetch their histories in one pool batch and diff each against its known transactions
   (``address_diff``);
2. fetch the transactions that are new, and the ones their inputs spend *from this
   address* (they are in its history), in de-duplicated pool batches, to compute
   ``received_sats`` / ``sent_sats``;
3. emit the events and wait until the batcher has stored them; only then record the new
   known transactions in the store.

One loop means changes to one address are handled strictly in order, while one round
covers many addresses with a few batched requests. Step 3's order makes a crash safe: an
event is never counted as sent before it is stored; events stored just before a crash, but
not yet recorded, are recognised in the event log on the first round after a restart and
not sent again.

Reorgs: a round waits (briefly) until the block producer has caught up with the servers'
tip, so the ``reorg`` event is always emitted before the ``address`` events it causes.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from batcher.events import Event
from batcher.store import BatchStore, StoreError
from stream.electrum import ServerPool
from stream.electrum.errors import ElectrumError, ServerError
from stream.electrum.subscriptions import (
    Moved,
    Overflowed,
    ScripthashSubscription,
    StatusNotification,
)

from .address_diff import (
    TxChange,
    confirmation_updates,
    diff_history,
    history_heights,
    history_status,
)
from .base import ChainChange, EventSink, make_event
from .headers import Reorg
from .txparse import ParsedTx, parse_tx

__all__ = ["AddressProducer", "CommittingSink"]

logger = logging.getLogger(__name__)

_PARSED_CACHE = 20_000  # parsed transactions kept for amounts (inputs, dropped txs)
_LARGE_SEEN = 20_000  # txids already reported as tx.large
_LOG_LOOKBACK = 500  # recent events per address checked after a restart
# A history that does not match the notified status comes from a server that is behind
# the one that notified: asked again this often before it is taken as it is.
_STALE_RETRIES = 25
_STALE_DELAY = 0.1


class _Incomplete(Exception):
    """A transaction the round needs could not be fetched: the round is done again."""


class CommittingSink(EventSink, Protocol):
    async def emit_committed(self, events: Sequence[Event]) -> None:
        """Emit and wait until every event is in a stored batch."""
        ...


class AddressProducer:
    """Watches addresses; see the module docstring."""

    def __init__(
        self,
        pool: ServerPool,
        store: BatchStore,
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
    ) -> None:
        self._pool = pool
        self._store = store
        self._sink = sink
        self._network = network
        self._depth = confirmations
        self._large_tx_sats = large_tx_sats
        self._scan_blocks = scan_blocks
        self._tip_wait = tip_wait
        self._reorg_wait = reorg_wait
        self._loss_grace = loss_grace
        self._round_max = round_max
        self._retry_delay = retry_delay
        self._known: dict[str, dict[str, int]] = {}
        self._conf_emitted: dict[str, dict[str, int]] = {}
        self._amounts: dict[str, dict[str, tuple[int, int]]] = {}
        self._by_scripthash: dict[str, str] = {}
        self._unchecked_log: set[str] = set()  # addresses not yet compared with the log
        self._dirty: dict[str, None] = {}  # an ordered set
        self._expected: dict[str, str | None] = {}  # status last notified, per address
        self._stale: dict[str, int] = {}  # address -> histories that did not match it
        # Addresses with transactions above a reorg's fork -> when to read their history
        # anyway. Their heights are unknown until the server, having applied the reorg,
        # notifies a new status (or that time passes); no confirmation updates meanwhile.
        self._reorged: dict[str, float] = {}
        # A transaction missing from one history (or unmined in it) may come from a server
        # that is behind: ``dropped`` / ``unconfirmed`` only once it is still so
        # ``loss_grace`` later. address -> {txid: first seen missing}; address -> recheck.
        self._losing: dict[str, dict[str, float]] = {}
        self._recheck: dict[str, float] = {}
        self._incomplete_rounds = 0
        self._to_subscribe: dict[str, None] = {}
        self._to_unsubscribe: dict[str, None] = {}
        self._changes: list[ChainChange] = []
        self._tip = 0
        self._parsed: OrderedDict[str, ParsedTx] = OrderedDict()
        self._large_seen: OrderedDict[str, None] = OrderedDict()
        self._subs: ScripthashSubscription | None = None
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
            if address in self._known:
                continue
            self._known[address] = {}
            self._conf_emitted[address] = {}
            self._by_scripthash[self._pool.scripthash(address)] = address
            self._to_unsubscribe.pop(address, None)
            self._to_subscribe[address] = None
        self._wake.set()

    def unwatch(self, address: str) -> None:
        """Stop watching (the store has already forgotten it)."""
        if self._known.pop(address, None) is None:
            return
        self._conf_emitted.pop(address, None)
        self._amounts.pop(address, None)
        self._expected.pop(address, None)
        self._stale.pop(address, None)
        self._reorged.pop(address, None)
        self._losing.pop(address, None)
        self._recheck.pop(address, None)
        self._by_scripthash.pop(self._pool.scripthash(address), None)
        self._dirty.pop(address, None)
        self._to_subscribe.pop(address, None)
        self._to_unsubscribe[address] = None
        self._wake.set()

    def carrier(self, address: str) -> str | None:
        """The url of the server the address is subscribed on (None: not (yet) placed)."""
        if self._subs is None or address not in self._known:
            return None
        return self._subs.carrier(self._pool.scripthash(address))

    @property
    def watching(self) -> int:
        return len(self._known)

    def stats(self) -> dict[str, int]:
        return {**self._counters, "watching": len(self._known), "dirty": len(self._dirty),
                "tip": self._tip}

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        tip = await self._store.get_tip()
        self._tip = tip[0] if tip else 0
        for address in await self._store.watch_list():
            self.watch([address])
            known = await self._store.known_txs(address)
            self._known[address] = known
            self._conf_emitted[address] = {
                txid: min(self._depth, self._tip - height + 1)
                for txid, height in known.items() if 0 < height <= self._tip
            }
            self._unchecked_log.add(address)
        task_status.started()
        async with self._pool.subscribe_scripthashes() as subs:
            self._subs = subs
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen, subs)
                await self._loop(subs)

    async def _listen(self, subs: ScripthashSubscription) -> None:
        async for note in subs:
            if isinstance(note, StatusNotification):
                self._mark_scripthashes({note.scripthash: note.status})
            elif isinstance(note, Moved):
                self._mark_scripthashes(note.statuses)
            elif isinstance(note, Overflowed):
                logger.warning("%d address notifications dropped; reconciling every address",
                               note.dropped)
                self._expected.clear()  # the notified statuses are out of date
                self._dirty.update(dict.fromkeys(self._known))
            self._wake.set()

    def _mark_scripthashes(self, statuses: Mapping[str, str | None]) -> None:
        for sh, status in statuses.items():
            address = self._by_scripthash.get(sh)
            if address is not None:
                self._expected[address] = status
                self._stale.pop(address, None)
                self._reorged.pop(address, None)
                self._dirty[address] = None

    async def _loop(self, subs: ScripthashSubscription) -> None:
        while True:
            deadline = min([*self._reorged.values(), *self._recheck.values(), math.inf])
            with anyio.move_on_after(deadline - anyio.current_time()):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self._round(subs)
            except (ElectrumError, StoreError, _Incomplete) as exc:
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
                if self._stale:
                    await anyio.sleep(_STALE_DELAY)
                if self._dirty or self._changes:
                    self._wake.set()

    # -- one round ---------------------------------------------------------------------
    async def _round(self, subs: ScripthashSubscription) -> None:
        """One round. Nothing of the producer's state changes before the round's events
        are stored: a round that fails is simply done again."""
        self._counters["rounds"] += 1
        await self._update_subscriptions(subs)
        now = anyio.current_time()
        for timers in (self._reorged, self._recheck):
            for address, deadline in list(timers.items()):
                if deadline <= now:
                    del timers[address]
                    self._dirty[address] = None
        tip_moved = self._apply_chain_changes()
        if self._dirty:
            tip_moved = await self._await_tip() or tip_moved
        addresses = list(self._dirty)[: self._round_max]
        for address in addresses:
            del self._dirty[address]
        logger.debug("round %d: %d dirty address(es), tip %d", self._counters["rounds"],
                     len(addresses), self._tip)
        try:
            changes = await self._diff(addresses)
            emitted = {a: dict(self._conf_emitted.get(a, {})) for a in changes}
            for address, (_, tx_changes) in changes.items():
                for change in tx_changes:
                    if change.status == "confirmed":
                        emitted[address][change.txid] = change.confirmations
                    else:
                        emitted[address].pop(change.txid, None)
            # Confirmation updates: every address when the tip moved, else the changed ones.
            for address in list(self._known) if tip_moved else list(changes):
                if address in self._reorged or address not in self._known:
                    continue
                known = changes[address][0] if address in changes else self._known[address]
                losing = self._losing.get(address, {})  # held back: no updates meanwhile
                updates, emitted[address] = confirmation_updates(
                    {t: h for t, h in known.items() if t not in losing},
                    emitted.get(address, self._conf_emitted.get(address, {})),
                    self._tip, self._depth)
                if updates:
                    changes.setdefault(address, (known, []))[1].extend(updates)
            await self._amounts_for(changes)
            events: list[Event] = []
            for address, (_, tx_changes) in changes.items():
                events.extend(self._address_event(address, c) for c in tx_changes)
            large = self._large_events(changes)
            events.extend(large)
            if events:
                logger.debug("emitting %d event(s)", len(events))
                await self._sink.emit_committed(events)
                self._counters["events"] += len(events)
        except BaseException:
            self._dirty.update(dict.fromkeys(addresses))  # not handled: next round
            raise
        # Stored: now the round counts.
        self._large_seen.update((e.key, None) for e in large)
        while len(self._large_seen) > _LARGE_SEEN:
            self._large_seen.popitem(last=False)
        for address, counts in emitted.items():
            if address in self._known:
                self._conf_emitted[address] = counts
        self._incomplete_rounds = 0
        for address, (current, _) in changes.items():
            if address not in self._known:
                continue  # unwatched meanwhile
            self._unchecked_log.discard(address)
            if self._known[address] != current:
                self._known[address] = current
                await self._store.set_known_txs(address, current)

    async def _update_subscriptions(self, subs: ScripthashSubscription) -> None:
        if self._to_unsubscribe:
            gone = list(self._to_unsubscribe)
            self._to_unsubscribe.clear()
            await subs.remove([self._pool.scripthash(a) for a in gone])
        while self._to_subscribe:
            chunk = list(self._to_subscribe)[:1000]
            statuses = await subs.add_addresses(chunk)
            for address in chunk:
                self._to_subscribe.pop(address, None)
                status = statuses.get(self._pool.scripthash(address))
                self._expected[address] = status
                if status is not None or self._known.get(address):
                    self._dirty[address] = None
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
                for address, known in self._known.items():
                    # Already dirty: notified after the server applied the reorg.
                    if address not in self._dirty and any(h > fork for h in known.values()):
                        self._reorged[address] = deadline
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
            while (target := self._servers_tip()) is not None and self._tip < target:
                await self._chain_moved.wait()
                moved = self._apply_chain_changes() or moved
        return moved

    def _servers_tip(self) -> int | None:
        heights = [
            s["height"] for s in self._pool.stats()["servers"]
            if s["state"] == "connected" and isinstance(s.get("height"), int)
        ]
        # The lower median: one server ahead of the others (or on a branch the block
        # producer rejected) does not hold every round up.
        return statistics.median_low(heights) if heights else None

    async def _diff(self, addresses: list[str]
                    ) -> dict[str, tuple[dict[str, int], list[TxChange]]]:
        if not addresses:
            return {}
        histories = await self._pool.get_histories_batch(addresses)
        result: dict[str, tuple[dict[str, int], list[TxChange]]] = {}
        for address, history in zip(addresses, histories, strict=True):
            if address not in self._known:
                continue  # unwatched while fetching
            if isinstance(history, ServerError):
                logger.warning("history of %s failed: %s; will retry", address, history)
                self._dirty[address] = None
                continue
            try:
                current = history_heights(history)
                status = history_status(history)
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("bad history for %s: %s; will retry", address, exc)
                self._dirty[address] = None
                continue
            if address in self._expected and status != self._expected[address]:
                tries = self._stale[address] = self._stale.get(address, 0) + 1
                if tries < _STALE_RETRIES:
                    self._dirty[address] = None  # ask again (maybe another server)
                    continue
                logger.warning("history of %s never matched its status; taking it as is",
                               address)
            self._stale.pop(address, None)
            self._reorged.pop(address, None)
            changes = diff_history(self._known[address], current, self._tip)
            changes, current = self._hold_losses(address, changes, current)
            if address in self._unchecked_log:
                changes = await self._not_in_log(address, changes)
            result[address] = (current, changes)
        return result

    def _hold_losses(self, address: str, changes: list[TxChange], current: dict[str, int]
                     ) -> tuple[list[TxChange], dict[str, int]]:
        """Hold back ``dropped`` / ``unconfirmed`` until still so after ``loss_grace``
        (the transaction keeps its known height meanwhile)."""
        losses = {c.txid for c in changes if c.status in ("dropped", "unconfirmed")}
        losing = {t: since for t, since in self._losing.get(address, {}).items() if t in losses}
        now = anyio.current_time()
        held: set[str] = set()
        for txid in losses:
            since = losing.setdefault(txid, now)
            if now - since < self._loss_grace:
                held.add(txid)
                due = since + self._loss_grace
                self._recheck[address] = min(self._recheck.get(address, due), due)
        if losing:
            self._losing[address] = losing
        else:
            self._losing.pop(address, None)
        if not held:
            return changes, current
        known = self._known[address]
        kept = dict(current)
        for txid in held:
            kept[txid] = known[txid]
        return [c for c in changes if c.txid not in held], kept

    async def _not_in_log(self, address: str, changes: list[TxChange]) -> list[TxChange]:
        """After a restart: drop the changes already stored as events before it."""
        if not changes:
            return changes
        latest: dict[str, tuple[str, int]] = {}
        confirmed: dict[str, int] = {}
        for event in await self._store.address_events(address, limit=_LOG_LOOKBACK):
            data = event.data
            txid = str(data.get("txid"))
            latest.setdefault(txid, (str(data.get("status")), int(data.get("height", 0))))
            if data.get("status") == "confirmed":
                count = int(data.get("confirmations", 0))
                confirmed[txid] = max(confirmed.get(txid, 0), count)
        kept = [c for c in changes if latest.get(c.txid) != (c.status, c.height)]
        emitted = self._conf_emitted.setdefault(address, {})
        for change in changes:
            if change not in kept and change.status == "confirmed":
                emitted[change.txid] = max(confirmed.get(change.txid, 0),
                                           emitted.get(change.txid, 0))
        return kept

    # -- amounts -----------------------------------------------------------------------
    async def _amounts_for(self, changes: dict[str, tuple[dict[str, int], list[TxChange]]]
                           ) -> None:
        """Fill ``self._amounts`` for every change: the transaction itself and the
        transactions of this address that its inputs spend."""
        wanted: dict[str, None] = {}
        for address, (_, tx_changes) in changes.items():
            cached = self._amounts.get(address, {})
            for change in tx_changes:
                if change.txid not in cached and change.status != "dropped":
                    wanted[change.txid] = None
        await self._fetch(wanted)
        history_wanted: dict[str, None] = {}
        for address, (current, tx_changes) in changes.items():
            mine = set(current) | set(self._known.get(address, {}))
            for change in tx_changes:
                parsed = self._parsed.get(change.txid)
                if parsed is not None:
                    history_wanted.update(
                        (s.txid, None) for s in parsed.spends if s.txid in mine
                    )
        await self._fetch(history_wanted)
        for address, (current, tx_changes) in changes.items():
            cached = self._amounts.setdefault(address, {})
            for change in tx_changes:
                if change.txid in cached:
                    continue
                parsed = self._parsed.get(change.txid)
                if parsed is None:
                    continue  # a dropped tx we never saw: amounts from the log below
                sent = 0
                for spend in parsed.spends:
                    prev = self._parsed.get(spend.txid)
                    if prev is not None and spend.vout < len(prev.outputs):
                        out = prev.outputs[spend.vout]
                        if out.address == address:
                            sent += out.value_sats
                cached[change.txid] = (parsed.received_by(address), sent)
            for txid in list(cached):
                if txid not in current and not any(c.txid == txid for c in tx_changes):
                    del cached[txid]
        for address, (_, tx_changes) in changes.items():
            missing = [c.txid for c in tx_changes if c.txid not in self._amounts[address]]
            if missing:
                await self._amounts_from_log(address, missing)
        unfetched = [t for t in {**wanted, **history_wanted} if t not in self._parsed]
        if unfetched:
            # Amounts would be wrong: do the round again (the history may have moved on),
            # unless a server keeps refusing, then go on rather than stall every address.
            self._incomplete_rounds += 1
            if self._incomplete_rounds < 5:
                raise _Incomplete(f"{len(unfetched)} transaction(s) not available, "
                                  f"e.g. {unfetched[0]}")
            logger.warning("going on without %d transaction(s) (amounts may be 0): %s",
                           len(unfetched), ", ".join(unfetched[:5]))

    async def _amounts_from_log(self, address: str, txids: list[str]) -> None:
        cached = self._amounts[address]
        for event in await self._store.address_events(address, limit=_LOG_LOOKBACK):
            txid = event.data.get("txid")
            if txid in txids and txid not in cached:
                cached[str(txid)] = (int(event.data.get("received_sats", 0)),
                                     int(event.data.get("sent_sats", 0)))

    async def _fetch(self, txids: dict[str, None]) -> None:
        """Parse these transactions into the cache (de-duplicated, one pool batch)."""
        missing = [t for t in txids if t not in self._parsed]
        if not missing:
            return
        raws = await self._pool.get_transactions_batch(missing)
        for txid, raw in zip(missing, raws, strict=True):
            if isinstance(raw, ServerError):
                logger.info("transaction %s not available: %s", txid, raw)
                continue
            try:
                parsed = parse_tx(str(raw), self._network)
            except ValueError as exc:
                logger.warning("transaction %s from the server does not parse: %s", txid, exc)
                continue
            if parsed.txid != txid:
                logger.warning("server answered transaction %s for %s; ignored",
                               parsed.txid, txid)
                continue
            self._parsed[txid] = parsed
        while len(self._parsed) > _PARSED_CACHE:
            self._parsed.popitem(last=False)

    # -- events ------------------------------------------------------------------------
    def _address_event(self, address: str, change: TxChange) -> Event:
        received, sent = self._amounts.get(address, {}).get(change.txid, (0, 0))
        return make_event("address", address, {
            "address": address,
            "txid": change.txid,
            "height": change.height,
            "status": change.status,
            "received_sats": received,
            "sent_sats": sent,
            "confirmations": change.confirmations,
        }, ts=time.time())

    def _large_events(self, changes: dict[str, tuple[dict[str, int], list[TxChange]]]
                      ) -> list[Event]:
        """``tx.large`` once per transaction first seen for a watched address (mined ones
        are the block scan's when it is on)."""
        events = []
        seen: set[str] = set()
        for _, tx_changes in changes.values():
            for change in tx_changes:
                if not change.first_seen or change.txid in self._large_seen or \
                        change.txid in seen:
                    continue
                if self._scan_blocks and change.height > 0:
                    continue
                parsed = self._parsed.get(change.txid)
                if parsed is None or parsed.total_out_sats < self._large_tx_sats:
                    continue
                seen.add(change.txid)
                events.append(make_event("tx.large", change.txid, large_tx_data(
                    parsed, change.height)))
        return events


def large_tx_data(parsed: ParsedTx, height: int) -> dict[str, Any]:
    """The ``tx.large`` event's data."""
    return {
        "txid": parsed.txid,
        "height": height,
        "total_out_sats": parsed.total_out_sats,
        "outputs": parsed.outputs_json(),
    }
