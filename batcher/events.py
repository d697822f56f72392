"""The event and batch types every layer agrees on.

An ``Event`` is one thing that happened on chain (a block, an address payment...). The
batcher groups events of one type into a ``Batch``; the store gives the batch its ``seq``.
Both are frozen: once made, an event is shared by the store, the hub and every client.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["EVENT_TYPES", "Batch", "Event", "format_ts", "new_event_id"]

#: The event types Chainwire produces (see ARCHITECTURE.md for their fields).
EVENT_TYPES: frozenset[str] = frozenset({"block", "reorg", "address", "tx.large", "fees", "server"})


def new_event_id() -> str:
    """A fresh, unique event id (producers may pass a deterministic one instead)."""
    return uuid.uuid4().hex


def format_ts(ts: float) -> str:
    """Epoch seconds as the wire's ISO-8601 UTC form, millisecond precision."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Event:
    """One chain event.

    ``key`` is what the event is about (an address, a txid or a height, as a string);
    ``ts`` is when Chainwire saw it, in epoch seconds; ``data`` holds the type's fields.
    """

    type: str
    key: str
    data: Mapping[str, Any]
    ts: float
    id: str = field(default_factory=new_event_id)

    def to_dict(self) -> dict[str, Any]:
        """The event as it appears inside a batch on the wire."""
        return {
            "id": self.id,
            "type": self.type,
            "key": self.key,
            "ts": format_ts(self.ts),
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class Batch:
    """Events of one type, stored under one ``seq`` and delivered as one message.

    ``seq`` is strictly increasing and assigned by the store; ``epoch`` changes only when
    the store is reset, so a client can tell "resume" from "start over".
    """

    seq: int
    epoch: str
    type: str
    events: tuple[Event, ...]
    ts: float

    @property
    def count(self) -> int:
        return len(self.events)

    def to_dict(self) -> dict[str, Any]:
        """The batch as it appears on the wire (SSE ``data:`` and the WS ``batch`` op)."""
        return {
            "seq": self.seq,
            "epoch": self.epoch,
            "type": self.type,
            "count": self.count,
            "events": [event.to_dict() for event in self.events],
            "ts": format_ts(self.ts),
        }
