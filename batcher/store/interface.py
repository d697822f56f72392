"""The store interface: what every engine implements and every user may rely on.

The store gives each batch its ``seq`` (strictly increasing, in commit order, without gaps)
and keeps the events so a client can replay what it missed. It also keeps the producers'
state (watch list, known transactions per address, tip) so they resume after a restart.

Saving is idempotent per ``NewBatch.batch_id``: if a save raised after the database had in
fact committed (a connection cut during COMMIT), saving the same batch again returns the
stored batch with its original ``seq`` instead of writing it twice.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import orjson

from batcher.events import Batch, Event

__all__ = [
    "BatchLog",
    "BatchReader",
    "BatchStore",
    "EventQueries",
    "NewBatch",
    "ProducerState",
    "Prunable",
    "StoreError",
    "StoreUnavailable",
    "WatchLimitReached",
    "WatchList",
    "WatchPage",
    "redact_url",
    "validate_event",
]


class StoreError(Exception):
    """The store could not do what was asked (closed, misused, or the database failed)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now; trying again later may work."""


class WatchLimitReached(Exception):
    """Watching the new addresses would take the watch list over its cap: none was added.

    Not a ``StoreError``: the store is fine, the request is what cannot be met."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the watch list is full (at most {limit} addresses)")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class WatchPage:
    """One page of the watch list in byte order of the address, and the list's size."""

    addresses: list[str]
    total: int


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch before it is stored: no ``seq`` or ``epoch`` yet.

    ``batch_id`` makes saving idempotent; ``ts`` is when the window closed (epoch seconds).
    ``data_json`` optionally holds each event's ``data`` already encoded (orjson text), so
    the runner can do that work while the store is busy with the previous group.
    """

    type: str
    events: tuple[Event, ...]
    ts: float
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    data_json: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.events:
            raise ValueError("a batch needs at least one event")
        if self.data_json is not None and len(self.data_json) != len(self.events):
            raise ValueError("data_json must hold one entry per event")

    @classmethod
    def encoded(cls, event_type: str, events: tuple[Event, ...], ts: float) -> NewBatch:
        """A batch with ``data_json`` filled in."""
        dumps = orjson.dumps
        return cls(
            event_type, events, ts, data_json=tuple(dumps(dict(e.data)).decode() for e in events)
        )

    @property
    def count(self) -> int:
        return len(self.events)

    def sequenced(self, seq: int, epoch: str) -> Batch:
        """The stored form of this batch."""
        return Batch(seq=seq, epoch=epoch, type=self.type, events=self.events, ts=self.ts)


def validate_event(event: Event) -> None:
    """Raise ``ValueError`` if ``event`` cannot be stored and replayed byte for byte.

    Checked when an event is submitted, so a bad event fails its producer at once instead of
    making a batch that no store can ever save.
    """
    if not isinstance(event, Event):
        raise ValueError(f"expected an Event, got {type(event).__name__}")
    if not isinstance(event.type, str) or not event.type:
        raise ValueError(f"event type must be a non-empty string, got {event.type!r}")
    if not isinstance(event.key, str):
        raise ValueError(f"event key must be a string, got {event.key!r}")
    if not isinstance(event.id, str) or not event.id:
        raise ValueError(f"event id must be a non-empty string, got {event.id!r}")
    if isinstance(event.ts, bool) or not isinstance(event.ts, int | float):
        raise ValueError(f"event ts must be epoch seconds, got {event.ts!r}")
    try:
        orjson.dumps(dict(event.data))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event data is not JSON-encodable: {exc}") from None


# -- the seams ----------------------------------------------------------------------------
# Each user of the store is handed the narrowest of these it needs: the runner a
# ``BatchLog``, replay a ``BatchReader``, REST an ``EventQueries``, producers a
# ``ProducerState``, the watch commands a ``WatchList``, retention a ``Prunable``. A
# multi-node deployment plugs in here: a follower node's hub is fed from ``BatchReader``,
# and ``WatchList`` commands are what edges forward to the leader.


class BatchLog(Protocol):
    """The batch log the runner writes: one transaction per group of batches."""

    @property
    def url(self) -> str:
        """The database URL with any password removed (safe to log)."""
        ...

    async def save_batches(self, batches: Sequence[NewBatch]) -> list[Batch]:
        """Store ``batches`` in one transaction (group commit), in order; return them sequenced.

        Idempotent per ``batch_id``: a batch already stored comes back with its stored seq.
        """
        ...


class BatchReader(Protocol):
    """The committed batch log, read in seq order (replay, resume, ``/api/v1/batches``)."""

    @property
    def epoch(self) -> str:
        """Changes only when the store is reset; valid after ``open()``."""
        ...

    async def batches_after(self, seq: int, limit: int = 100) -> list[Batch]:
        """Stored batches with ``seq`` greater than ``seq``, oldest first (replay)."""
        ...

    async def last_seq(self) -> int:
        """The highest seq ever assigned (0 when none); survives retention pruning."""
        ...

    async def oldest_seq(self) -> int | None:
        """The lowest seq still stored, or None when no batch is stored (gap detection)."""
        ...


class EventQueries(Protocol):
    """Stored events by kind, newest first (REST, and producers rebuilding their state)."""

    async def recent_blocks(self, limit: int = 10) -> list[Event]:
        """The latest ``block`` events, newest first."""
        ...

    async def large_transactions(self, min_sats: int = 0, limit: int = 50) -> list[Event]:
        """The latest ``tx.large`` events paying out at least ``min_sats``, newest first."""
        ...

    async def address_events(self, address: str, limit: int = 50) -> list[Event]:
        """The latest ``address`` events about ``address``, newest first."""
        ...


class WatchList(Protocol):
    """The watched addresses (the commands users send, and what producers follow).

    Each address is *permanent* (an API call or ``CHAINWIRE_WATCH`` asked for it) or
    *leased* (only stream subscriptions did): a leased address is let go some time after its
    last subscriber left (``watch_expire``); an API call makes it permanent.
    """

    async def watch_add(self, addresses: Iterable[str], *, leased: bool = False,
                        max_watched: int | None = None) -> list[str]:
        """Watch ``addresses``; return those that were not watched yet, in the order given.

        ``leased=False`` also makes the already-leased ones among them permanent;
        ``leased=True`` adds the new ones as leased and leaves the others as they are. With
        ``max_watched``, raise ``WatchLimitReached`` (changing nothing) if the new ones
        would take the list over it: all or nothing, atomic against other writers.
        """
        ...

    async def watch_remove(self, address: str) -> bool:
        """Stop watching ``address`` (and forget its known transactions); True if it was."""
        ...

    async def watch_expire(self, addresses: Iterable[str]) -> list[str]:
        """Stop watching those of ``addresses`` that are still leased (an API call may have
        made one permanent meanwhile), forgetting their known transactions; return them."""
        ...

    async def watch_list(self) -> list[str]:
        """Every watched address, oldest first."""
        ...

    async def watch_leased(self) -> list[str]:
        """The leased addresses, oldest first."""
        ...

    async def watch_page(self, after: str | None, limit: int) -> WatchPage:
        """Up to ``limit`` watched addresses greater than ``after`` (byte order: the same
        on both engines, and a cursor that stays valid when ``after`` is unwatched)."""
        ...


class ProducerState(EventQueries, Protocol):
    """What producers keep across restarts (plus the stored events they rebuild from)."""

    async def watch_list(self) -> list[str]:
        """Every watched address, oldest first."""
        ...

    async def known_txs(self, address: str) -> dict[str, int]:
        """The transactions already reported for ``address``: txid -> height (0 = mempool)."""
        ...

    async def set_known_txs(self, address: str, txs: Mapping[str, int]) -> None:
        """Replace the known transactions of ``address``."""
        ...

    async def known_txs_many(self, addresses: Sequence[str]) -> dict[str, dict[str, int]]:
        """``known_txs`` of many addresses in one query (start-up reads the list in
        pages): only those with known transactions are keys."""
        ...

    async def logged_amounts(self, addresses: Sequence[str]
                             ) -> dict[str, dict[str, tuple[int, int]]]:
        """``(received_sats, sent_sats)`` per txid of each address, from its latest stored
        ``address`` event about that txid, in one query: what a restart already knows, so
        it need not fetch those transactions again. Only addresses with events are keys."""
        ...

    async def get_tip(self) -> tuple[int, str] | None:
        """The last processed tip as (height, hash), or None."""
        ...

    async def set_tip(self, height: int, block_hash: str) -> None:
        """Record the last processed tip."""
        ...


class Prunable(Protocol):
    """What retention needs."""

    async def prune(self, older_than: float) -> int:
        """Delete batches whose ts is before ``older_than`` (epoch seconds); return how many."""
        ...


@runtime_checkable
class BatchStore(BatchLog, BatchReader, ProducerState, WatchList, Prunable, Protocol):
    """Every seam at once, plus the lifecycle: what ``open_store`` returns and the wiring
    (``stream/services.py``) holds. Nothing else should ask for all of it.

    Use as ``async with open_store(url) as store:``. Every method may raise
    ``StoreUnavailable`` when the database is down; the runner retries saves.
    """

    async def open(self) -> None:
        """Connect (retrying while the database is down) and create or migrate the schema."""
        ...

    async def close(self) -> None:
        """Release every connection. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""
        ...

    async def reset(self) -> None:
        """Delete every batch and start a new epoch (the watch list and tip are kept).

        Seqs keep counting up across epochs, so a client's old position can only be
        behind the new history (a gap), never inside it."""
        ...


# The password runs to the last "@" of the authority: an unencoded "@" inside it must not
# leave its tail in a log.
_PASSWORD = re.compile(r"(://[^:/@\s]*):[^/\s]*@")


def redact_url(url: str, *, mask: str = "") -> str:
    """``url`` with its password (if any) removed, for logs and errors; a ``mask`` shows
    where it was (``mask="***"``: ``user:***@host``)."""
    shown = f":{mask}@" if mask else "@"
    return _PASSWORD.sub(lambda found: found.group(1) + shown, url)
