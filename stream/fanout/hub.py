"""The hub: fans each stored batch out to every connected client.

``publish()`` never waits on a client. Each batch is filtered and encoded once per
distinct filter (orjson), then offered to each client's bounded buffer. A client whose
buffer is full is cut: its stream ends and the transport tells it where to resume
(WS close 4008 naming the last delivered seq; SSE ends so EventSource reconnects with
Last-Event-ID). Replay from the store then gives it everything it missed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from batcher.events import Batch
from stream.fanout.filters import ClientFilter

__all__ = ["DisconnectReason", "Hub", "HubClosed", "HubState", "Message", "Subscriber"]

logger = logging.getLogger(__name__)

_WS_BATCH_PREFIX = b'{"op":"batch",'


@dataclass(frozen=True, slots=True)
class Message:
    """One filtered batch, encoded once and shared by every client with the same filter.

    Every form a transport writes is built here, once per batch and filter, so sending
    to a client costs no encoding at all (at 1000 clients that is most of the work):

    - ``payload``: the batch JSON;
    - ``sse_frame``: the whole Server-Sent Event (``id``, ``event``, ``data``), byte for
      byte what sse-starlette's ``ServerSentEvent.encode`` gives;
    - ``ws_text``: the WS ``batch`` message, the same object with ``"op":"batch"`` in
      front (by concatenation, not a second encode), as the ``str`` ASGI sends.
    """

    seq: int
    type: str
    count: int
    payload: bytes
    sse_frame: bytes
    ws_text: str

    @classmethod
    def encode(cls, batch: Batch) -> Message:
        # orjson escapes newlines inside strings, so the JSON is one line: one data: field.
        payload = orjson.dumps(batch.to_dict())
        sse_frame = b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (
            batch.seq, batch.type.encode(), payload)
        ws_text = (_WS_BATCH_PREFIX + payload[1:]).decode()
        return cls(batch.seq, batch.type, batch.count, payload, sse_frame, ws_text)

    @property
    def nbytes(self) -> int:
        """The batch JSON's size: what a client's byte bound counts (the SSE and WS
        forms are held too, so memory is about three times this)."""
        return len(self.payload)


class HubClosed(Exception):
    """The hub is closed (the server is shutting down): nobody new can subscribe.

    Its own type, not a ``RuntimeError``: transports catch exactly this to say goodbye,
    so a framework's misuse ``RuntimeError`` is never mistaken for a shutdown.
    """


class HubState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class DisconnectReason(enum.Enum):
    """Why a subscriber's stream ended (for logs and metrics)."""

    CLIENT_GONE = "client_gone"
    SLOW_CLIENT = "slow_client"
    SHUTDOWN = "shutdown"


class Subscriber:
    """One client's live feed: a bounded buffer of ``Message``s matching its filter.

    ``receive()`` hands over everything buffered at once, so a client that was not
    scheduled for a while catches up in one write instead of one task wake-up per
    message. The feed ends (``receive()`` returns ``[]``) when the client is cut for
    being too slow (``reason`` is ``SLOW_CLIENT``: at once, the rest comes back through
    replay) or the hub shuts down (``SHUTDOWN``: after what was already buffered).
    """

    # Slots, a list and a bare future: an idle client costs only what it holds (a deque
    # and an anyio.Event each allocate a 64-slot block: ~1.5 kB per client between them).
    __slots__ = ("_buffer", "_buffer_bytes", "_buffer_size", "_buffered_bytes", "_hub",
                 "_wakeup", "delivered", "filter", "reason", "transport")

    def __init__(self, hub: Hub, transport: str, client_filter: ClientFilter,
                 buffer_size: int, buffer_bytes: int | None = None) -> None:
        self._hub = hub
        self.transport = transport
        self.filter = client_filter
        self._buffer: list[Message] = []
        self._buffer_size = buffer_size
        # Batches vary in size (a tx.large with many outputs): bound the bytes too. One
        # message always fits an empty buffer, or a batch over the bound would cut all.
        self._buffer_bytes = buffer_bytes
        self._buffered_bytes = 0
        self._wakeup: asyncio.Future[None] | None = None
        self.reason: DisconnectReason | None = None
        self.delivered = 0  # messages offered to this client's buffer

    @property
    def cut(self) -> bool:
        """True once the hub has stopped feeding this subscriber."""
        return self.reason is not None

    def _offer(self, message: Message) -> bool:
        if self.reason is not None:
            return False
        if len(self._buffer) >= self._buffer_size or (
                self._buffer_bytes is not None and self._buffer
                and self._buffered_bytes + message.nbytes > self._buffer_bytes):
            self._end(DisconnectReason.SLOW_CLIENT)
            return False
        self._buffered_bytes += message.nbytes
        self._buffer.append(message)
        self.delivered += 1
        self._wake()
        return True

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():  # a receive() that was cancelled cancelled its future
                wakeup.set_result(None)

    def _end(self, reason: DisconnectReason) -> None:
        if self.reason is None:
            self.reason = reason
        if reason is not DisconnectReason.SHUTDOWN:
            self._buffer.clear()  # nothing more will be sent: free it now
            self._buffered_bytes = 0
        self._wake()

    def set_filter(self, client_filter: ClientFilter) -> None:
        """Change what this client receives from the next published batch on."""
        self._hub._regroup(self, client_filter)

    async def receive(self, max_messages: int = 100) -> list[Message]:
        """Wait for messages; return up to ``max_messages`` of them, oldest first.

        Returns ``[]`` once the feed has ended and nothing more is to be sent.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        while not self._buffer:
            if self.reason is not None:
                return []
            # The server runs on asyncio (uvicorn, aiorpcx): a future is all a wait needs.
            wakeup = self._wakeup = asyncio.get_running_loop().create_future()
            await wakeup
        if self.reason is DisconnectReason.SLOW_CLIENT or self.reason is \
                DisconnectReason.CLIENT_GONE:
            return []
        buffer = self._buffer
        if len(buffer) <= max_messages:
            messages = list(buffer)
            buffer.clear()
            self._buffered_bytes = 0
            return messages
        messages = buffer[:max_messages]
        del buffer[:max_messages]
        self._buffered_bytes -= sum(message.nbytes for message in messages)
        return messages

    async def __aiter__(self) -> AsyncIterator[Message]:
        while messages := await self.receive():
            for message in messages:
                yield message

    def close(self) -> None:
        """The client went away: unsubscribe (idempotent)."""
        self._end(DisconnectReason.CLIENT_GONE)
        self._hub._remove(self)


class Hub:
    """Fan-out of published batches to subscribers, never blocking the publisher.

    Subscribers are grouped by filter, so a batch is filtered and encoded once per
    group and then only appended to each member's buffer: the per-client work of a
    publish is a few attribute reads and a wake-up.
    """

    def __init__(self, *, buffer_size: int = 1000, buffer_bytes: int | None = None) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        if buffer_bytes is not None and buffer_bytes < 1:
            raise ValueError(f"buffer_bytes must be at least 1, got {buffer_bytes}")
        self.buffer_size = buffer_size
        self.buffer_bytes = buffer_bytes
        self.state = HubState.OPEN
        self._subscribers: set[Subscriber] = set()
        self._groups: dict[ClientFilter, set[Subscriber]] = {}
        self.last_seq = 0
        self.batches_published = 0
        self._retired_deliveries: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self.encodes = 0
        self._drained: anyio.Event | None = None

    def subscribe(self, transport: str, client_filter: ClientFilter) -> Subscriber:
        """A new live feed for one client; raises ``HubClosed`` once ``close()`` ran."""
        if self.state is HubState.CLOSED:
            raise HubClosed("cannot subscribe to a closed hub")
        subscriber = Subscriber(self, transport, client_filter, self.buffer_size,
                                self.buffer_bytes)
        self._subscribers.add(subscriber)
        self._groups.setdefault(client_filter, set()).add(subscriber)
        return subscriber

    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers)

    @property
    def deliveries(self) -> Counter[str]:
        """Messages offered to clients' buffers, by transport, since start."""
        total = Counter(self._retired_deliveries)
        for subscriber in self._subscribers:
            total[subscriber.transport] += subscriber.delivered
        return +total  # without zero counts

    def _leave_group(self, subscriber: Subscriber) -> None:
        group = self._groups.get(subscriber.filter)
        if group is not None:
            group.discard(subscriber)
            if not group:
                del self._groups[subscriber.filter]

    def _regroup(self, subscriber: Subscriber, client_filter: ClientFilter) -> None:
        if subscriber in self._subscribers:
            self._leave_group(subscriber)
            self._groups.setdefault(client_filter, set()).add(subscriber)
        subscriber.filter = client_filter

    def _remove(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            self._leave_group(subscriber)
            self._retired_deliveries[subscriber.transport] += subscriber.delivered
            reason = subscriber.reason or DisconnectReason.CLIENT_GONE
            self.disconnects[f"{subscriber.transport}:{reason.value}"] += 1
        if not self._subscribers and self._drained is not None:
            self._drained.set()

    def publish(self, batch: Batch) -> None:
        """Offer ``batch`` to every subscriber; never waits and never raises into the
        batcher (``BatchSink``). After ``close()`` it only records the seq: shutdown ends
        the streams first, then the batcher drains into the store, and clients get those
        batches by replay when they come back."""
        self.last_seq = max(self.last_seq, batch.seq)
        if self.state is HubState.CLOSED:
            return
        self.batches_published += 1
        for key, members in list(self._groups.items()):
            try:
                filtered = key.apply(batch)
                message = None if filtered is None else Message.encode(filtered)
            except Exception:
                # One bad event must not starve every later client of this batch:
                # cut the clients of this filter; they resume and see it by replay.
                logger.exception("filtering batch %d failed; cutting its clients", batch.seq)
                for subscriber in list(members):
                    subscriber._end(DisconnectReason.SLOW_CLIENT)
                continue
            if message is None:
                continue
            self.encodes += 1
            for subscriber in list(members):
                if subscriber.reason is None and not subscriber._offer(message):
                    logger.info("cut a slow %s client at seq %d", subscriber.transport,
                                batch.seq)

    def close(self) -> None:
        """End every stream (transports then tell clients to come back later)."""
        if self.state is HubState.CLOSED:
            return
        self.state = HubState.CLOSED
        for subscriber in list(self._subscribers):
            subscriber._end(DisconnectReason.SHUTDOWN)

    async def wait_drained(self) -> None:
        """After ``close()``: wait until every client's handler has let go."""
        if self.state is not HubState.CLOSED:
            raise RuntimeError("wait_drained() needs a closed hub")
        if self._subscribers:
            self._drained = self._drained or anyio.Event()
            await self._drained.wait()

    def stats(self) -> dict[str, Any]:
        by_transport = Counter(s.transport for s in self._subscribers)
        return {
            "state": self.state.value,
            "clients": dict(by_transport),
            "filters": len(self._groups),
            "last_seq": self.last_seq,
            "batches_published": self.batches_published,
            "encodes": self.encodes,
            "deliveries": dict(self.deliveries),
            "disconnects": dict(self.disconnects),
        }
