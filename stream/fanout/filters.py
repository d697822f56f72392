"""Client filters: which events of a batch a client asked for (pure, no I/O).

``types`` selects event types; ``addresses`` narrows ``address`` events to those
addresses and ``tx.large`` events to transactions touching them; ``min_sats`` narrows
``address`` and ``tx.large`` events by value. Other types reach every client that asked
for them. A filtered batch keeps its ``seq``; its ``count`` is what it carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batcher.events import EVENT_TYPES, Batch, Event

__all__ = ["ClientFilter", "FilterError"]

#: Event types that the address and value filters narrow; the rest pass whole.
NARROWED_TYPES = frozenset({"address", "tx.large"})


class FilterError(ValueError):
    """A filter parameter that cannot be used; the message is safe to show the client."""


@dataclass(frozen=True, slots=True)
class ClientFilter:
    """What one client wants. ``None`` means "everything" for types and addresses."""

    types: frozenset[str] | None = None
    addresses: frozenset[str] | None = None
    min_sats: int = 0

    @classmethod
    def build(
        cls,
        types: Iterable[str] | None = None,
        addresses: Iterable[str] | None = None,
        min_sats: int = 0,
    ) -> ClientFilter:
        """Validate and normalise; raises ``FilterError`` naming the bad value."""
        type_set = None
        if types is not None:
            type_set = frozenset(t.strip() for t in types if t.strip())
            unknown = sorted(type_set - EVENT_TYPES)
            if unknown:
                raise FilterError(
                    f"unknown event type {unknown[0]!r}; "
                    f"expected some of {', '.join(sorted(EVENT_TYPES))}"
                )
            if not type_set:
                type_set = None
        if isinstance(min_sats, bool) or not isinstance(min_sats, int) or min_sats < 0:
            raise FilterError(f"min_sats must be a non-negative integer, got {min_sats!r}")
        address_set = frozenset(addresses) if addresses is not None else None
        return cls(type_set, address_set or None, min_sats)

    @property
    def is_everything(self) -> bool:
        return self.types is None and self.addresses is None and self.min_sats == 0

    def wants_type(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types

    def matches(self, event: Event) -> bool:
        if not self.wants_type(event.type):
            return False
        if event.type not in NARROWED_TYPES:
            return True
        if self.addresses is not None and not (_addresses_of(event) & self.addresses):
            return False
        return self.min_sats == 0 or _value_of(event) >= self.min_sats

    def apply(self, batch: Batch) -> Batch | None:
        """The part of ``batch`` this client gets (same seq), or ``None`` if nothing."""
        if not self.wants_type(batch.type):
            return None
        if self.is_everything or (
            batch.type not in NARROWED_TYPES
        ):
            return batch
        kept = tuple(event for event in batch.events if self.matches(event))
        if not kept:
            return None
        if len(kept) == len(batch.events):
            return batch
        return Batch(batch.seq, batch.epoch, batch.type, kept, batch.ts)


def _addresses_of(event: Event) -> frozenset[str]:
    data: Mapping[str, Any] = event.data
    if event.type == "address":
        return frozenset((event.key,))
    # tx.large: the addresses its outputs pay, the only ones the event names (no producer
    # lists a transaction's inputs). An output with no address (OP_RETURN) touches none.
    found = {out.get("address") for out in data.get("outputs", ()) if isinstance(out, Mapping)}
    found.discard(None)
    return frozenset(str(a) for a in found)


def _value_of(event: Event) -> int:
    data = event.data
    if event.type == "address":
        return max(int(data.get("received_sats", 0)), int(data.get("sent_sats", 0)))
    return int(data.get("total_out_sats", 0))
