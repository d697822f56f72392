"""What subscribers receive: the notification types, and the buffer that holds them.

See ``subscriptions.py`` for when each notification comes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = [
    "HeaderNotification",
    "HeadersMoved",
    "Moved",
    "NotificationBuffer",
    "Overflowed",
    "StatusNotification",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeaderNotification:
    server: str
    height: int
    header: str  # 80-byte header, hex


@dataclass(frozen=True, slots=True)
class HeadersMoved:
    old_server: str
    new_server: str
    height: int
    header: str


@dataclass(frozen=True, slots=True)
class StatusNotification:
    server: str
    scripthash: str
    status: str | None


@dataclass(frozen=True, slots=True)
class Moved:
    old_server: str
    new_server: str
    statuses: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class Overflowed:
    dropped: int


class NotificationBuffer:
    """A bounded notification buffer with an overflow marker; an async iterator.

    The registry calls ``deliver`` (never blocking) and ``close_stream``; the subscriber
    iterates."""

    def __init__(self, buffer: int) -> None:
        send: MemoryObjectSendStream[Any]
        receive: MemoryObjectReceiveStream[Any]
        send, receive = anyio.create_memory_object_stream[Any](buffer)
        self._send = send
        self._receive = receive
        self._dropped = 0
        self.closed = False

    def deliver(self, item: object) -> None:
        if self.closed:
            return
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            # Never block the connection that delivers: drop, and say so (Overflowed).
            if self._dropped == 0:
                logger.warning("subscription buffer full: dropping notifications")
            self._dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        if self._dropped and self._receive.statistics().current_buffer_used == 0:
            dropped, self._dropped = self._dropped, 0
            return Overflowed(dropped)
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close_stream(self, *, receiver: bool = False) -> None:
        """End the iteration (after what is buffered); ``receiver`` also frees the buffer."""
        self.closed = True
        self._send.close()
        if receiver:
            self._receive.close()
