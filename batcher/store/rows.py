"""Rows shared by both store engines: how batches and events map to table rows and back.

Replay must re-encode byte for byte, so an event keeps its float ``ts`` (not the wire's
millisecond string) and its ``data`` as the exact JSON text orjson made; JSON text read back
with orjson re-encodes to the same bytes (a ``jsonb`` column would reorder keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from batcher.events import Batch, Event
from batcher.store.interface import NewBatch

__all__ = [
    "BatchRow",
    "EventRow",
    "batch_rows",
    "batches_from_rows",
    "event_from_row",
    "value_sats",
]

#: (seq, batch_id, type, ts, count)
BatchRow = tuple[int, str, str, float, int]
#: (seq, idx, id, type, key, ts, value_sats, data)
EventRow = tuple[int, int, str, str, str, float, int | None, str]

_INT64_MAX = 2**63 - 1


def value_sats(event: Event) -> int | None:
    """The amount the ``large_transactions`` query filters on (``tx.large`` only)."""
    if event.type != "tx.large":
        return None
    value = event.data.get("total_out_sats")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX:
        return value
    return None


def batch_rows(
    batches: Sequence[NewBatch], first_seq: int
) -> tuple[list[BatchRow], list[EventRow]]:
    """The rows for ``batches``, numbered from ``first_seq``."""
    brows: list[BatchRow] = []
    erows: list[EventRow] = []
    dumps = orjson.dumps
    for offset, batch in enumerate(batches):
        seq = first_seq + offset
        brows.append((seq, batch.batch_id, batch.type, float(batch.ts), batch.count))
        encoded = batch.data_json
        if encoded is None:
            encoded = tuple(dumps(dict(e.data)).decode() for e in batch.events)
        for idx, event in enumerate(batch.events):
            erows.append(
                (
                    seq,
                    idx,
                    event.id,
                    event.type,
                    event.key,
                    float(event.ts),
                    value_sats(event) if event.type == "tx.large" else None,
                    encoded[idx],
                )
            )
    return brows, erows


def event_from_row(event_type: str, event_id: str, key: str, ts: float, data: str) -> Event:
    """An event read back from the store."""
    return Event(type=event_type, key=key, data=orjson.loads(data), ts=ts, id=event_id)


def batches_from_rows(rows: Iterable[Any], epoch: str) -> list[Batch]:
    """Batches from rows ``(seq, type, batch_ts, event_id, key, event_ts, data)`` in order."""
    out: list[Batch] = []
    seq: int | None = None
    btype = ""
    bts = 0.0
    events: list[Event] = []
    for row in rows:
        if row[0] != seq:
            if seq is not None:
                out.append(Batch(seq=seq, epoch=epoch, type=btype, events=tuple(events), ts=bts))
            seq, btype, bts = row[0], row[1], row[2]
            events = []
        events.append(event_from_row(btype, row[3], row[4], row[5], row[6]))
    if seq is not None:
        out.append(Batch(seq=seq, epoch=epoch, type=btype, events=tuple(events), ts=bts))
    return out
