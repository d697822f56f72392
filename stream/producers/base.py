"""What every producer shares: where events go, and how chain changes reach producers.

Producers never talk to the store's batch tables or the hub: they hand events to an
``EventSink`` (the batcher's bounded input, so a full batcher slows them down and nothing
is dropped). The block producer is the one source of chain truth; it tells the other
producers about new blocks and reorgs through ``ChainListener.on_chain``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from batcher.events import Event

from .headers import Extended, Reorg

__all__ = ["ChainChange", "ChainListener", "EventSink", "make_event"]

#: What the block producer tells listeners: blocks added on top of the tip (``Extended``),
#: or the tip moved to another branch (``Reorg``, its ``connected`` blocks included).
ChainChange = Extended | Reorg


class EventSink(Protocol):
    """Where producers put events. ``emit`` waits while the batcher is full."""

    async def emit(self, events: Sequence[Event]) -> None: ...


class ChainListener(Protocol):
    """A producer that reacts to the chain (confirmations, block scans, fee updates).

    ``on_chain`` is called by the block producer after it emitted the ``block`` / ``reorg``
    events of that change, in chain order. It must return quickly (queue the work and do it
    in the listener's own task) so one slow listener never delays blocks.
    """

    def on_chain(self, change: ChainChange) -> None: ...


def make_event(event_type: str, key: str | int, data: dict[str, object],
               ts: float | None = None) -> Event:
    """An event stamped now (``ts`` is when Chainwire saw it)."""
    return Event(event_type, str(key), data, time.time() if ts is None else ts)
