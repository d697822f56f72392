"""The named types of an address round, and its pure steps.

A round takes a :class:`RoundPlan` (the dirty addresses, whether the tip moved), turns each
address's history into a :class:`HistoryDiff` (the history now, the changes to emit), and
ends in a :class:`RoundOutcome`: the events to store and what the producer records once
they are stored. Nothing here awaits or reads the clock.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batcher.events import Event

from .address_diff import TxChange
from .base import make_event
from .txparse import ParsedTx
from .watched import WatchedAddress

__all__ = [
    "HeldLosses",
    "HistoryDiff",
    "RoundOutcome",
    "RoundPlan",
    "address_event",
    "counts_after",
    "hold_losses",
    "large_tx_data",
    "large_tx_events",
]

_LOSSES = ("dropped", "unconfirmed")


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """What one round handles: the addresses taken from the dirty queue, in order."""

    entries: tuple[WatchedAddress, ...]
    tip_moved: bool
    tip: int  # the height the block producer has reached (confirmations count to it)


@dataclass(frozen=True, slots=True)
class HistoryDiff:
    """One address's history now (``{txid: height}``) and the changes to emit for it."""

    current: Mapping[str, int]
    changes: tuple[TxChange, ...]

    def plus(self, more: Iterable[TxChange]) -> HistoryDiff:
        return HistoryDiff(self.current, (*self.changes, *more))


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """A round's events, and what counts once they are stored: each entry's history and
    confirmation counts, and the transactions reported as ``tx.large``."""

    entries: Mapping[str, WatchedAddress]  # every entry the round read, by address
    diffs: Mapping[str, HistoryDiff]
    confirmations: Mapping[str, Mapping[str, int]]
    events: tuple[Event, ...]
    large: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HeldLosses:
    """A diff with its young losses held back (they keep their known height meanwhile)."""

    changes: tuple[TxChange, ...]
    current: dict[str, int]
    losing: dict[str, float]  # txid -> when first seen lost, for the losses still pending
    recheck: float | None  # when the earliest held loss is due (None: nothing held)


def hold_losses(known: Mapping[str, int], losing: Mapping[str, float],
                changes: Sequence[TxChange], current: Mapping[str, int], *,
                now: float, grace: float) -> HeldLosses:
    """Hold back ``dropped`` / ``unconfirmed`` until still so ``grace`` after first seen:
    one history may come from a server that is behind."""
    losses = {c.txid for c in changes if c.status in _LOSSES}
    pending = {t: since for t, since in losing.items() if t in losses}
    held: set[str] = set()
    recheck: float | None = None
    for txid in losses:
        since = pending.setdefault(txid, now)
        if now - since < grace:
            held.add(txid)
            due = since + grace
            recheck = due if recheck is None else min(recheck, due)
    kept = dict(current)
    for txid in held:
        kept[txid] = known[txid]
    return HeldLosses(tuple(c for c in changes if c.txid not in held), kept, pending, recheck)


def counts_after(sent: Mapping[str, int], changes: Iterable[TxChange]) -> dict[str, int]:
    """The confirmation counts sent once ``changes`` are: a ``confirmed`` change sets its
    count, any other forgets it (the transaction starts over if mined again)."""
    counts = dict(sent)
    for change in changes:
        if change.status == "confirmed":
            counts[change.txid] = change.confirmations
        else:
            counts.pop(change.txid, None)
    return counts


def large_tx_data(parsed: ParsedTx, height: int) -> dict[str, Any]:
    """The ``tx.large`` event's data."""
    return {
        "txid": parsed.txid,
        "height": height,
        "total_out_sats": parsed.total_out_sats,
        "outputs": parsed.outputs_json(),
    }


def address_event(address: str, change: TxChange, amounts: Mapping[str, tuple[int, int]],
                  ts: float) -> Event:
    """The ``address`` event of one change (unpriced: 0 and 0)."""
    received, sent = amounts.get(change.txid, (0, 0))
    return make_event("address", address, {
        "address": address,
        "txid": change.txid,
        "height": change.height,
        "status": change.status,
        "received_sats": received,
        "sent_sats": sent,
        "confirmations": change.confirmations,
    }, ts=ts)


def large_tx_events(diffs: Mapping[str, HistoryDiff], parsed: Mapping[str, ParsedTx], *,
                    reported: Container[str], threshold: int, scan_blocks: bool, ts: float
                    ) -> list[Event]:
    """``tx.large`` once per transaction first seen for a watched address and not
    ``reported`` before (mined ones are the block scan's when it is on)."""
    events = []
    seen: set[str] = set()
    for diff in diffs.values():
        for change in diff.changes:
            if not change.first_seen or change.txid in reported or change.txid in seen:
                continue
            if scan_blocks and change.height > 0:
                continue
            tx = parsed.get(change.txid)
            if tx is None or tx.total_out_sats < threshold:
                continue
            seen.add(change.txid)
            events.append(make_event("tx.large", change.txid,
                                     large_tx_data(tx, change.height), ts=ts))
    return events
