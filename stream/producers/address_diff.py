"""The pure core of the address producer: what changed for one address, as events.

An address's state is ``{txid: height}`` (0 = in the mempool, >0 = mined at that height),
kept in the store. Comparing it with the Electrum history now gives each transaction's
status change:

* new and in the mempool -> ``mempool``; new and mined -> ``confirmed`` only;
* mempool -> mined, or mined at another height (a reorg) -> ``confirmed``;
* mined -> back in the mempool (reorged out) -> ``unconfirmed``;
* gone from the history (left the mempool, or reorged out and not in the mempool)
  -> ``dropped``.

Then, on each new block, ``confirmed`` updates with the new confirmation count until the
configured depth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "STATUSES",
    "TxChange",
    "confirmation_updates",
    "confirmations_at",
    "diff_history",
    "history_heights",
    "history_status",
]

STATUSES: Final = ("mempool", "confirmed", "unconfirmed", "dropped")


@dataclass(frozen=True, slots=True)
class TxChange:
    """One address event to emit (amounts are filled in by the producer)."""

    txid: str
    status: str
    height: int  # 0 unless confirmed
    confirmations: int
    first_seen: bool = False  # never seen for this address before


def history_heights(history: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Electrum's ``get_history`` answer as ``{txid: height}``, in the server's order.

    ElectrumX reports a mempool transaction with unconfirmed parents at height -1; both
    mempool forms become 0. ``ValueError`` for an answer that is not a history."""
    heights: dict[str, int] = {}
    for entry in history:
        try:
            txid, height = entry["tx_hash"], entry["height"]
        except (KeyError, TypeError):
            raise ValueError(f"not a history entry: {entry!r}") from None
        if not isinstance(txid, str) or len(txid) != 64 or not isinstance(height, int):
            raise ValueError(f"not a history entry: {entry!r}")
        heights[txid.lower()] = max(0, height)
    return heights


def history_status(history: Sequence[Mapping[str, Any]]) -> str | None:
    """The Electrum status of a history (protocol: sha256 of ``txid:height:`` for each
    entry, in the server's order; None for no history). A history whose status differs
    from the notified one comes from a server that has not caught up yet."""
    if not history:
        return None
    text = "".join(f"{entry['tx_hash']}:{entry['height']:d}:" for entry in history)
    return hashlib.sha256(text.encode()).hexdigest()


def confirmations_at(height: int, tip: int) -> int:
    """Confirmations of a transaction mined at ``height`` when the tip is ``tip`` (at least
    1 for a mined one: the server may be a block ahead of the tip we have processed)."""
    return 0 if height <= 0 else max(1, tip - height + 1)


def diff_history(known: Mapping[str, int], current: Mapping[str, int], tip: int
                 ) -> list[TxChange]:
    """The status changes from ``known`` to ``current`` (both ``{txid: height}``): mined
    transactions by height first, then the mempool, then what is gone."""
    changes: list[TxChange] = []
    ordered = sorted(current.items(), key=lambda item: (item[1] <= 0, item[1]))
    for txid, height in ordered:
        old = known.get(txid)
        if old == height:
            continue
        if height > 0:
            status = "confirmed"
        elif old is None:
            status = "mempool"
        else:
            status = "unconfirmed"  # it was mined; the block left the chain
        changes.append(
            TxChange(txid, status, height, confirmations_at(height, tip), first_seen=old is None)
        )
    for txid in known:
        if txid not in current:
            changes.append(TxChange(txid, "dropped", 0, 0))
    return changes


def confirmation_updates(
    known: Mapping[str, int], emitted: Mapping[str, int], tip: int, depth: int,
) -> tuple[list[TxChange], dict[str, int]]:
    """``confirmed`` updates up to ``tip``: for every mined transaction, one per count
    after the last ``emitted`` one, up to its count at ``tip`` and at most ``depth`` (a
    count skipped meanwhile, e.g. while a reorg was settling, is caught up in order).
    Returns the updates and the new emitted counts."""
    updated = dict(emitted)
    changes: list[TxChange] = []
    for txid, height in known.items():
        if height <= 0:
            continue
        target = min(depth, tip - height + 1)
        for count in range(updated.get(txid, 0) + 1, target + 1):
            changes.append(TxChange(txid, "confirmed", height, count))
            updated[txid] = count
    return changes, updated
