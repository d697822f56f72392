"""``GET /ws``: the WebSocket stream for bots.

After the handshake the server says ``hello``; the client ``subscribe``s (types,
addresses, min_sats, resume_from) and receives ``batch`` messages. Recoverable errors
answer ``{"op":"error",...}`` and keep the connection. Close codes:

- 1001 the server is shutting down (reconnect and resume);
- 1008 policy: too many errors (too many connections are refused before the
  handshake: HTTP 429 from one IP, 503 when the server is full);
- 1009 a message over the size limit;
- 1011 the store failed during a replay; the reason names ``resume_from`` too;
- 4008 the client fell behind; the reason names the last delivered seq
  (``"slow client; resume_from=1234"``) so it can resume without loss.

The protocol itself (what to send, when to close, which limits) is
``stream.transports.ws_session.WsSession``, a pure state machine; this module is the I/O
around it: it reads frames, runs the feed, and performs the session's actions on the
socket, the watch list and the hub; the server's one ``WsWatch`` watches its sends and
tells it when the server shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import time

import anyio
import anyio.abc
import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from batcher.store import StoreError, WatchLimitReached
from stream import __version__
from stream.fanout.hub import HubClosed, Subscriber
from stream.fanout.resume import Cursor, Gap, replay_then_live
from stream.services import Services
from stream.transports.admission import Refusal, refusal_response
from stream.transports.ws_session import (
    CLOSE_SLOW_CLIENT,
    Action,
    Close,
    Send,
    SessionLimits,
    SetFilter,
    StartStream,
    Watch,
    WsSession,
)
from stream.transports.ws_watch import WsWatch

__all__ = ["CLOSE_SLOW_CLIENT", "PeerGone", "ws_endpoint"]

logger = logging.getLogger(__name__)

#: What Starlette raises once the client is gone: a send that failed on the socket
#: (``WebSocketDisconnect``, code 1006) or any use after the disconnect or our close
#: (``WebSocketDisconnected``). Nothing broader: a misuse ``RuntimeError`` is a bug.
_GONE = (WebSocketDisconnect, WebSocketDisconnected)


class PeerGone(Exception):
    """The client's socket is gone: nothing more can be sent to it or read from it."""


class _Connection:
    # One per connection, held for its whole life: no per-instance dict.
    __slots__ = ("cursor", "feed_scope", "held", "peer", "send_lock", "send_timeout",
                 "sending_since", "services", "session", "subscriber", "task_group",
                 "watchdog", "ws")

    def __init__(self, websocket: WebSocket, services: Services,
                 watchdog: WsWatch | None = None) -> None:
        self.ws = websocket
        self.services = services
        self.watchdog = watchdog  # the server's one watchdog: stalled sends, shutdown
        limits = services.limits
        self.send_timeout = limits.ws_send_timeout
        self.session = WsSession(
            SessionLimits(max_addresses=limits.ws_max_addresses,
                          max_message_bytes=limits.ws_max_message_bytes,
                          max_errors=limits.ws_max_errors),
            services.canonical_address)
        # Taken for every chunk of frames, and free unless a reply meets the feed: asyncio's
        # lock takes it without a yield to the loop and makes its waiters' deque only
        # when someone waits (anyio's holds one from the start: ~0.8 kB per connection).
        self.send_lock = asyncio.Lock()
        self.sending_since: float | None = None
        self.peer = websocket.client.host if websocket.client else "?"
        self.subscriber: Subscriber | None = None
        self.feed_scope: anyio.CancelScope | None = None
        self.cursor = Cursor(services.hub.last_seq)
        self.task_group: anyio.abc.TaskGroup | None = None
        self.held: set[str] = set()  # addresses this connection holds a lease on

    async def perform(self, actions: list[Action]) -> None:
        """Carry out the session's actions, in order."""
        for action in actions:
            if isinstance(action, Send):
                await self.send_texts([orjson.dumps(action.message).decode()])
            elif isinstance(action, Watch):
                await self.watch(action.addresses)
            elif isinstance(action, StartStream):
                await self.start_feed(action)
            elif isinstance(action, SetFilter):
                if self.subscriber is not None:
                    self.subscriber.set_filter(action.filter)
            elif isinstance(action, Close):
                await self.close(action.code, action.reason)
            else:  # End: the feed and the read loop both stop
                assert self.task_group is not None
                self.task_group.cancel_scope.cancel()

    async def send_texts(self, texts: list[str]) -> None:
        """Send each text as one frame, in order, under one lock (``WsWatch`` bounds
        how long that may take); ``PeerGone`` if the client went away."""
        async with self.send_lock:
            try:
                for text in texts:
                    # Per frame: the watchdog measures a lack of progress, not how long a
                    # big chunk takes a slow but reading client.
                    self.sending_since = time.monotonic()
                    await self.ws.send_text(text)
            except _GONE:
                raise PeerGone from None
            finally:
                self.sending_since = None

    async def close(self, code: int, reason: str) -> None:
        async with self.send_lock:
            self.sending_since = time.monotonic()
            try:
                await self.ws.close(code, reason)
            except _GONE:
                pass  # the client already went away
            finally:
                self.sending_since = None

    async def watch(self, addresses: tuple[str, ...]) -> None:
        fresh = [a for a in addresses if a not in self.held]
        try:
            await self.services.watch_stream(fresh)  # held from here, until release_unnamed
        except WatchLimitReached as exc:
            await self.perform(self.session.watch_refused(exc.limit))
        except StoreError:
            logger.warning("store unavailable while handling a WS message")
            await self.perform(self.session.watch_failed())
        else:
            self.held.update(fresh)
            await self.perform(self.session.watched())

    def release_unnamed(self, *, ended: bool = False) -> None:
        """Let go of the held addresses the connection no longer names (unsubscribed, or
        all of them once it ended), so their leases can run."""
        named = set() if ended else (self.session.interest.addresses or set())
        gone = self.held - named
        if gone:
            self.held -= gone
            self.services.release(gone)

    def let_go(self) -> None:
        """The watchdog (``WsWatch``) saw a send make no progress for ``ws_send_timeout``:
        the peer stopped reading, and its sends would block for good (holding its
        subscriber, connection and per-IP slot)."""
        logger.info("WS client %s has not read for %.0f s; letting it go at seq %d",
                    self.peer, self.send_timeout, self.cursor.seq)
        self.session.send_stalled()  # End: no close frame, it would block too
        if self.task_group is not None:
            self.task_group.cancel_scope.cancel()

    def say_goodbye(self) -> None:
        """Shutdown (told by ``WsWatch``): every connection says goodbye with 1001,
        subscribed or not."""
        if self.task_group is not None:
            self.task_group.start_soon(self.close_on_shutdown)

    async def run(self) -> None:
        store = self.services.batches
        hello = self.session.hello(version=__version__, epoch=store.epoch,
                                   last_seq=await store.last_seq(),
                                   network=self.services.settings.network)
        try:
            await self.perform(hello)
            async with anyio.create_task_group() as tg:
                self.task_group = tg
                # No idle tasks of its own: one watchdog for all connections tells it
                # when it stalled or the server shuts down (``WsWatch``).
                if self.watchdog is not None:
                    self.watchdog.add(self)
                await self.read_loop()
                tg.cancel_scope.cancel()
        except* PeerGone:
            # Raised by any of the tasks (the task group wraps it in an ExceptionGroup):
            # the peer left, which is how connections end; anything else propagates.
            self.session.peer_gone()
        finally:
            if self.watchdog is not None:
                self.watchdog.discard(self)
            self.release_unnamed(ended=True)

    async def close_on_shutdown(self) -> None:
        await self.perform(self.session.shutdown())

    async def read_loop(self) -> None:
        while self.session.reading:
            try:
                frame = await self.ws.receive()
            except _GONE:
                return
            if frame["type"] == "websocket.disconnect":
                return
            raw = frame.get("text") if frame.get("text") is not None else frame.get("bytes")
            if raw is not None:
                await self.perform(self.session.receive(raw))
                self.release_unnamed()

    async def start_feed(self, start: StartStream) -> None:
        if self.feed_scope is not None:
            self.feed_scope.cancel()
        if self.subscriber is not None:
            self.subscriber.close()
        try:
            subscriber = self.services.hub.subscribe("ws", start.filter)
        except HubClosed:
            await self.perform(self.session.stream_refused())
            return
        self.subscriber = subscriber
        self.cursor = Cursor(self.services.hub.last_seq)
        scope = anyio.CancelScope()
        self.feed_scope = scope
        assert self.task_group is not None
        self.task_group.start_soon(self.feed, subscriber, start.resume_from, start.epoch, scope)

    async def feed(self, subscriber: Subscriber, after: int | None, epoch: str | None,
                   scope: anyio.CancelScope) -> None:
        cursor = self.cursor
        items = replay_then_live(self.services.batches, subscriber, after, cursor, epoch=epoch,
                                 gate=self.services.replays)
        with scope:
            try:
                async for item in items:
                    if isinstance(item, Gap):
                        await self.send_texts(
                            [orjson.dumps({"op": "gap", **item.to_dict()}).decode()])
                    else:
                        # One frame per batch, encoded once by the hub for every client;
                        # what piled up while this client waited goes out under one lock.
                        await self.send_texts([message.ws_text for message in item])
                        cursor.seq = item[-1].seq
            except PeerGone:
                self.session.peer_gone()  # gone: let it go
                return
            except StoreError:
                logger.warning("store unavailable during replay; closing at seq %d", cursor.seq)
                await self.perform(self.session.stream_failed(cursor.seq))
                return
            finally:
                await items.aclose()  # frees its replay slot now, not when it is collected
                subscriber.close()
            # The hub ended the feed: the session says goodbye, and everything stops.
            await self.perform(self.session.stream_ended(subscriber.reason, cursor.seq))


async def ws_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    admission = services.admission
    # Refused before the handshake: an HTTP 429/503 with the typed error body.
    ticket = admission.admit(websocket.client.host if websocket.client else "?")
    if isinstance(ticket, Refusal):
        await websocket.send_denial_response(refusal_response(admission, ticket))
        return
    try:
        await websocket.accept()
        connection = _Connection(websocket, services, services.ws_watch)
        await connection.run()
    finally:
        ticket.release()
