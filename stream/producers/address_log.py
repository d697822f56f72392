"""The address producer's look at its own stored events.

After a restart, events stored just before a crash may not be recorded as known
transactions yet: an address's first changes are compared with its latest stored events
and those already there are not sent again. A dropped transaction never seen since the
restart takes its amounts from its stored events too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from batcher.events import Event
from batcher.store import EventQueries

from .address_diff import TxChange
from .watched import WatchedAddress

__all__ = ["LOG_LOOKBACK", "LoggedEvents", "amounts_from_log", "skip_logged"]

LOG_LOOKBACK = 500  # recent events per address read from the log


@dataclass(frozen=True, slots=True)
class LoggedEvents:
    """What an address's stored events say, per txid: the latest (status, height), and
    the highest ``confirmed`` count."""

    latest: dict[str, tuple[str, int]]
    confirmed: dict[str, int]

    @classmethod
    def read(cls, events: Iterable[Event]) -> LoggedEvents:
        """From stored events, newest first (as ``address_events`` returns them)."""
        latest: dict[str, tuple[str, int]] = {}
        confirmed: dict[str, int] = {}
        for event in events:
            data = event.data
            txid = str(data.get("txid"))
            latest.setdefault(txid, (str(data.get("status")), int(data.get("height", 0))))
            if data.get("status") == "confirmed":
                count = int(data.get("confirmations", 0))
                confirmed[txid] = max(confirmed.get(txid, 0), count)
        return cls(latest, confirmed)

    def unsent(self, changes: Sequence[TxChange]) -> list[TxChange]:
        """The changes whose latest stored event is not that very change."""
        return [c for c in changes if self.latest.get(c.txid) != (c.status, c.height)]


async def skip_logged(store: EventQueries, entry: WatchedAddress,
                      changes: Sequence[TxChange]) -> list[TxChange]:
    """``changes`` without those already stored as events; a stored ``confirmed`` count
    counts as sent (so it is not sent again either)."""
    if not changes:
        return list(changes)
    logged = LoggedEvents.read(await store.address_events(entry.address, limit=LOG_LOOKBACK))
    kept = logged.unsent(changes)
    sent = entry.confirmations
    for change in changes:
        if change not in kept and change.status == "confirmed":
            sent[change.txid] = max(logged.confirmed.get(change.txid, 0),
                                    sent.get(change.txid, 0))
    return kept


async def amounts_from_log(store: EventQueries, entry: WatchedAddress,
                           txids: Sequence[str]) -> None:
    """Price ``txids`` from their stored events (transactions no server has any more)."""
    cached = entry.amounts
    for event in await store.address_events(entry.address, limit=LOG_LOOKBACK):
        txid = event.data.get("txid")
        if txid in txids and txid not in cached:
            cached[str(txid)] = (int(event.data.get("received_sats", 0)),
                                 int(event.data.get("sent_sats", 0)))
