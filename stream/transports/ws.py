"""``GET /ws``: the WebSocket stream for bots.

After the handshake the server says ``hello``; the client ``subscribe``s (types,
addresses, min_sats, resume_from) and receives ``batch`` messages. Recoverable errors
answer ``{"op":"error",...}`` and keep the connection. Close codes:

- 1001 the server is shutting down (reconnect and resume);
- 1008 policy: too many connections from one IP, or too many errors;
- 1009 a message over the size limit;
- 4008 the client fell behind; the reason names the last delivered seq
  (``"slow client; resume_from=1234"``) so it can resume without loss.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from batcher.store import StoreError
from stream import __version__
from stream.fanout.filters import ClientFilter
from stream.fanout.hub import DisconnectReason, HubClosed, Subscriber
from stream.fanout.resume import Cursor, Gap, replay_then_live
from stream.services import Services
from stream.transports.ws_protocol import Ping, ProtocolError, Subscribe, parse_client_message
from stream.web.errors import error_response

__all__ = ["CLOSE_SLOW_CLIENT", "ws_endpoint"]

logger = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SLOW_CLIENT = 4008


@dataclass
class _Interest:
    """What the connection asked for so far (subscribe adds, unsubscribe removes)."""

    types: set[str] | None = None  # None: every type
    # None: address events of every address. Once a client names addresses it is narrowed
    # to them for good: unsubscribing the last one means "none", never "all".
    addresses: set[str] | None = None
    min_sats: int = 0

    def to_filter(self) -> ClientFilter:
        types = frozenset(self.types) if self.types is not None else None
        addresses = frozenset(self.addresses) if self.addresses is not None else None
        return ClientFilter(types, addresses, self.min_sats)

    def describe(self) -> dict[str, Any]:
        return {"types": sorted(self.types) if self.types is not None else None,
                "addresses": sorted(self.addresses) if self.addresses is not None else None,
                "min_sats": self.min_sats}


class _Connection:
    def __init__(self, websocket: WebSocket, services: Services) -> None:
        self.ws = websocket
        self.services = services
        self.limits = services.limits
        self.interest = _Interest()
        # Taken for every chunk of frames: skip anyio's yield to the loop when free.
        self.send_lock = anyio.Lock(fast_acquire=True)
        self.sending_since: float | None = None
        self.peer = websocket.client.host if websocket.client else "?"
        self.subscriber: Subscriber | None = None
        self.feed_scope: anyio.CancelScope | None = None
        self.cursor = Cursor(services.hub.last_seq)
        self.errors = 0
        self.closed = False
        self.task_group: anyio.abc.TaskGroup | None = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_texts([orjson.dumps(message).decode()])

    async def send_texts(self, texts: list[str]) -> None:
        """Send each text as one frame, in order, under one lock (``watch_sends`` bounds
        how long that may take)."""
        async with self.send_lock:
            try:
                for text in texts:
                    # Per frame: the watchdog measures a lack of progress, not how long a
                    # big chunk takes a slow but reading client.
                    self.sending_since = time.monotonic()
                    await self.ws.send_text(text)
            finally:
                self.sending_since = None

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            async with self.send_lock:
                self.sending_since = time.monotonic()
                try:
                    await self.ws.close(code, reason)
                except RuntimeError:
                    pass  # the client already went away
                finally:
                    self.sending_since = None

    async def watch_sends(self) -> None:
        """Let go of a peer that stopped reading.

        Its sends would block for good (holding its subscriber, connection and per-IP
        slot). A check every quarter of ``ws_send_timeout`` costs nothing per frame,
        unlike a deadline on each send (a timer set and cancelled 100k times a second
        at 1000 clients).
        """
        timeout = self.limits.ws_send_timeout
        while True:
            await anyio.sleep(timeout / 4)
            since = self.sending_since
            if since is not None and time.monotonic() - since > timeout:
                logger.info("WS client %s has not read for %.0f s; letting it go at seq %d",
                            self.peer, timeout, self.cursor.seq)
                self.closed = True
                if self.task_group is not None:
                    self.task_group.cancel_scope.cancel()
                return

    async def run(self) -> None:
        store = self.services.store
        await self.send({
            "op": "hello", "version": __version__, "epoch": store.epoch,
            "last_seq": await store.last_seq(), "network": self.services.settings.network,
            "limits": {"max_addresses": self.limits.ws_max_addresses,
                       "max_message_bytes": self.limits.ws_max_message_bytes},
        })
        async with anyio.create_task_group() as tg:
            self.task_group = tg
            tg.start_soon(self.close_on_shutdown)
            tg.start_soon(self.watch_sends)
            await self.read_loop()
            tg.cancel_scope.cancel()

    async def close_on_shutdown(self) -> None:
        """Every connection says goodbye with 1001, subscribed or not."""
        await self.services.shutting_down.wait()
        await self.close(CLOSE_GOING_AWAY, "server shutting down")
        if self.task_group is not None:
            self.task_group.cancel_scope.cancel()

    async def read_loop(self) -> None:
        while not self.closed:
            try:
                frame = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if frame["type"] == "websocket.disconnect":
                return
            raw = frame.get("text") if frame.get("text") is not None else frame.get("bytes")
            if raw is None:
                continue
            size = len(raw.encode() if isinstance(raw, str) else raw)
            if size > self.limits.ws_max_message_bytes:
                await self.close(CLOSE_TOO_BIG, f"message over {self.limits.ws_max_message_bytes}"
                                                 " bytes")
                return
            try:
                await self.handle(raw)
            except StoreError:
                logger.warning("store unavailable while handling a WS message")
                await self.send(ProtocolError(
                    "unavailable", "the store is unavailable; try again shortly").to_message())
            except ProtocolError as exc:
                self.errors += 1
                await self.send(exc.to_message())
                if self.errors >= self.limits.ws_max_errors:
                    await self.close(CLOSE_POLICY, "too many errors")
                    return

    async def handle(self, raw: str | bytes) -> None:
        command = parse_client_message(raw, self.services.canonical_address)
        if isinstance(command, Ping):
            await self.send({"op": "pong"})
            return
        interest = self.interest
        if isinstance(command, Subscribe):
            new_addresses = interest.addresses
            if command.addresses:
                new_addresses = (interest.addresses or set()) | set(command.addresses)
            if len(new_addresses or ()) > self.limits.ws_max_addresses:
                raise ProtocolError(
                    "limit_exceeded",
                    f"at most {self.limits.ws_max_addresses} addresses per connection",
                )
            if command.addresses:
                await self.services.watch(command.addresses)
            if command.types is not None:
                interest.types = (interest.types or set()) | set(command.types)
            interest.addresses = new_addresses
            if command.min_sats is not None:
                interest.min_sats = command.min_sats
            await self.send({"op": "subscribed", **interest.describe()})
            if self.subscriber is None or command.resume_from is not None:
                after = command.resume_from if command.resume_from is not None else None
                await self.start_feed(after, command.epoch)
            else:
                self.subscriber.set_filter(interest.to_filter())
        else:  # Unsubscribe
            if command.types is not None and interest.types is not None:
                interest.types -= command.types
            elif command.types is not None:
                # From "everything" to "everything but these".
                from batcher.events import EVENT_TYPES

                interest.types = set(EVENT_TYPES) - command.types
            if interest.addresses is not None:
                interest.addresses -= set(command.addresses)
            await self.send({"op": "subscribed", **interest.describe()})
            if self.subscriber is not None:
                self.subscriber.set_filter(interest.to_filter())

    async def start_feed(self, after: int | None, epoch: str | None) -> None:
        if self.feed_scope is not None:
            self.feed_scope.cancel()
        if self.subscriber is not None:
            self.subscriber.close()
        try:
            subscriber = self.services.hub.subscribe("ws", self.interest.to_filter())
        except HubClosed:
            await self.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        self.subscriber = subscriber
        self.cursor = Cursor(self.services.hub.last_seq)
        scope = anyio.CancelScope()
        self.feed_scope = scope
        assert self.task_group is not None
        self.task_group.start_soon(self.feed, subscriber, after, epoch, scope)

    async def feed(self, subscriber: Subscriber, after: int | None, epoch: str | None,
                   scope: anyio.CancelScope) -> None:
        cursor = self.cursor
        with scope:
            try:
                async for item in replay_then_live(self.services.store, subscriber, after,
                                                   cursor, epoch=epoch):
                    if isinstance(item, Gap):
                        await self.send({"op": "gap", **item.to_dict()})
                    else:
                        # One frame per batch, encoded once by the hub for every client;
                        # what piled up while this client waited goes out under one lock.
                        await self.send_texts([message.ws_text for message in item])
                        cursor.seq = item[-1].seq
            except (WebSocketDisconnect, RuntimeError):
                self.closed = True  # gone: let it go
                return
            except StoreError:
                logger.warning("store unavailable during replay; closing at seq %d", cursor.seq)
                await self.close(CLOSE_INTERNAL_ERROR,
                                 f"store unavailable; resume_from={cursor.seq}")
                return
            finally:
                subscriber.close()
            if subscriber.reason is DisconnectReason.SLOW_CLIENT:
                await self.close(CLOSE_SLOW_CLIENT, f"slow client; resume_from={cursor.seq}")
            elif subscriber.reason is DisconnectReason.SHUTDOWN:
                await self.close(CLOSE_GOING_AWAY, "server shutting down")
            assert self.task_group is not None
            self.task_group.cancel_scope.cancel()  # ends the read loop too


async def ws_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    ip = websocket.client.host if websocket.client else "?"
    per_ip = services.connections_by_ip
    if per_ip.get(ip, 0) >= services.limits.max_connections_per_ip:
        await websocket.send_denial_response(error_response(
            429, "too_many_connections",
            f"at most {services.limits.max_connections_per_ip} connections per client IP"))
        return
    per_ip[ip] = per_ip.get(ip, 0) + 1
    try:
        await websocket.accept()
        connection = _Connection(websocket, services)
        await connection.run()
    finally:
        per_ip[ip] -= 1
        if not per_ip[ip]:
            del per_ip[ip]
