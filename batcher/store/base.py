"""What both store engines share: the epoch, ``async with`` and argument checks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from batcher.events import Batch, Event
from batcher.store.rows import event_from_row

if TYPE_CHECKING:
    from batcher.store.interface import NewBatch

__all__ = ["StoreBase", "check_limit"]


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


class StoreBase(ABC):
    """Lifecycle plumbing and the read queries that are the same SQL on both engines;
    an engine supplies ``_rows`` and its placeholder style. ``open()`` sets ``_epoch``."""

    _epoch: str | None = None
    # Batch ids whose save raised (commit outcome unknown), and the highest seq known
    # committed: engines use them to make a retried save idempotent.
    _uncertain: set[str]
    _confirmed_seq: int

    @property
    def epoch(self) -> str:
        if self._epoch is None:
            raise RuntimeError("the store is not open")
        return self._epoch

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _confirm(self, batches: Sequence[NewBatch], ids: Iterable[str],
                 existing: Mapping[str, int], first: int, epoch: str) -> list[Batch]:
        """After a commit: sequence ``batches`` (already-stored ones keep the seq found in
        ``existing``, new ones count up from ``first``) and settle the bookkeeping."""
        self._uncertain.difference_update(ids)
        out: list[Batch] = []
        for batch in batches:
            seq = existing.get(batch.batch_id)
            if seq is None:
                seq = first
                first += 1
            out.append(batch.sequenced(seq, epoch))
        self._confirmed_seq = max(self._confirmed_seq, out[-1].seq)
        return out

    @abstractmethod
    async def _rows(self, query: str, args: Sequence[Any]) -> Sequence[Any]:
        """Run a read query with positional ``args``."""

    @abstractmethod
    def _placeholder(self, position: int) -> str:
        """The SQL placeholder for the 1-based argument ``position``."""

    async def last_seq(self) -> int:
        rows = await self._rows("SELECT last_seq FROM chainwire_meta", ())
        return int(rows[0][0])

    async def oldest_seq(self) -> int | None:
        rows = await self._rows("SELECT min(seq) FROM chainwire_batches", ())
        value = rows[0][0]
        return None if value is None else int(value)

    async def _latest(self, where: str, args: Sequence[Any], limit: int) -> list[Event]:
        check_limit(limit)
        rows = await self._rows(
            f"SELECT type, id, key, ts, data FROM chainwire_events WHERE {where} "
            f"ORDER BY seq DESC, idx DESC LIMIT {self._placeholder(len(args) + 1)}",
            (*args, limit),
        )
        return [event_from_row(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def recent_blocks(self, limit: int = 10) -> list[Event]:
        return await self._latest("type = 'block'", (), limit)

    async def large_transactions(self, min_sats: int = 0, limit: int = 50) -> list[Event]:
        where = f"type = 'tx.large' AND value_sats >= {self._placeholder(1)}"
        return await self._latest(where, (min_sats,), limit)

    async def address_events(self, address: str, limit: int = 50) -> list[Event]:
        return await self._latest(f"type = 'address' AND key = {self._placeholder(1)}",
                                  (address,), limit)
