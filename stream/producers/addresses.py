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
            deadline = min(self._reorged.values(), default=math.inf)
            with anyio.move_on_after(deadline - anyio.current_time()):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self._round(subs)
            except (ElectrumError, StoreError) as exc:
                self._counters["errors"] += 1
                logger.warning("address round failed, retrying in %.1fs: %s",
                               self._retry_delay, exc)
                await anyio.sleep(self._retry_delay)
                self._wake.set()
            else:
                if self._stale:
                    await anyio.sleep(_STALE_DELAY)
                if self._dirty or self._changes:
                    self._wake.set()

    # -- one round ---------------------------------------------------------------------
    async def _round(self, subs: ScripthashSubscription) -> None:
        self._counters["rounds"] += 1
        await self._update_subscriptions(subs)
        now = anyio.current_time()
        for address, deadline in list(self._reorged.items()):
            if deadline <= now:
                del self._reorged[address]
                self._dirty[address] = None
        blocks = self._apply_chain_changes()
        if self._dirty:
            blocks += await self._await_tip()
        addresses = list(self._dirty)[: self._round_max]
        for address in addresses:
            del self._dirty[address]
        logger.debug("round %d: %d dirty address(es), blocks %s", self._counters["rounds"],
                     len(addresses), blocks)
        try:
            changes = await self._diff(addresses)
        except BaseException:
            self._dirty.update(dict.fromkeys(addresses))  # not handled: next round
            raise
        events: list[Event] = []
        touched: set[str] = set()
        for address, (current, tx_changes) in changes.items():
            self._known[address] = current
            if tx_changes:
                touched.add(address)
            emitted = self._conf_emitted.setdefault(address, {})
            for change in tx_changes:
                if change.status == "confirmed":
                    emitted[change.txid] = change.confirmations
                else:
                    emitted.pop(change.txid, None)
        if blocks:
            for address, known in self._known.items():
                if address in self._reorged:
                    continue
                updates, self._conf_emitted[address] = confirmation_updates(
                    known, self._conf_emitted.get(address, {}), blocks, self._depth)
                if updates:
                    changes.setdefault(address, (known, []))[1].extend(updates)
        await self._amounts_for(changes)
        for address, (_, tx_changes) in changes.items():
            events.extend(self._address_event(address, c) for c in tx_changes)
        events.extend(self._large_events(changes))
        if events:
            logger.debug("emitting %d event(s)", len(events))
            await self._sink.emit_committed(events)
            self._counters["events"] += len(events)
        for address in touched:
            if address in self._known:  # not unwatched meanwhile
                await self._store.set_known_txs(address, self._known[address])

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

    def _apply_chain_changes(self) -> list[int]:
        """Take the queued chain changes: the new tip, the heights of new blocks (for
        confirmation updates) and, for a reorg, the addresses it may have touched."""
        heights: list[int] = []
        changes, self._changes = self._changes, []
        for change in changes:
            if isinstance(change, Reorg):
                fork = change.fork_height
                heights = [h for h in heights if h <= fork]
                deadline = anyio.current_time() + self._reorg_wait
                for address, known in self._known.items():
                    # Already dirty: notified after the server applied the reorg.
                    if address not in self._dirty and any(h > fork for h in known.values()):
                        self._reorged[address] = deadline
                blocks = change.connected
            else:
                blocks = change.blocks
            for block in blocks:
                heights.append(block.height)
                self._tip = block.height
        self._chain_moved = anyio.Event()
        return heights

    async def _await_tip(self) -> list[int]:
        """Wait (at most ``tip_wait``) until the block producer has the servers' tip;
        returns the heights of the blocks that came meanwhile."""
        heights: list[int] = []
        with anyio.move_on_after(self._tip_wait):
            while (target := self._servers_tip()) is not None and self._tip < target:
                await self._chain_moved.wait()
                heights += self._apply_chain_changes()
        return heights

    def _servers_tip(self) -> int | None:
        heights = [
            s["height"] for s in self._pool.stats()["servers"]
            if s["state"] == "connected" and isinstance(s.get("height"), int)
        ]
        return max(heights) if heights else None

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
            if address in self._unchecked_log:
                changes = await self._not_in_log(address, changes)
            result[address] = (current, changes)
        return result

    async def _not_in_log(self, address: str, changes: list[TxChange]) -> list[TxChange]:
        """After a restart: drop the changes already stored as events before it."""
        self._unchecked_log.discard(address)
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
        for _, tx_changes in changes.values():
            for change in tx_changes:
                if not change.first_seen or change.txid in self._large_seen:
                    continue
                if self._scan_blocks and change.height > 0:
                    continue
                parsed = self._parsed.get(change.txid)
                if parsed is None or parsed.total_out_sats < self._large_tx_sats:
                    continue
                self._large_seen[change.txid] = None
                events.append(make_event("tx.large", change.txid, large_tx_data(
                    parsed, change.height)))
        while len(self._large_seen) > _LARGE_SEEN:
            self._large_seen.popitem(last=False)
        return events


def large_tx_data(parsed: ParsedTx, height: int) -> dict[str, Any]:
    """The ``tx.large`` event's data."""
    return {
        "txid": parsed.txid,
        "height": height,
        "total_out_sats": parsed.total_out_sats,
        "outputs": parsed.outputs_json(),
    }
