"""uvicorn's WebSocket protocol (websockets-sansio), with data frames written in bulk.

uvicorn writes every ``websocket.send`` to the socket at once: one ``send()`` system call
and one TCP segment per frame. For a fan-out server that is most of the cost of a
delivery (measured: half the server's CPU at 1000 clients, ``bench/fanout.py``). Here a
data frame is queued on the connection and the queue is written once, at the end of the
event loop's current turn: the frames the hub hands a client in one go leave in one
``write``. Latency does not change (the flush runs before the loop next waits for I/O);
order does not either: everything goes through the websockets protocol's own output
queue, and uvicorn's handshake, pong and close paths drain that queue first.

It relies on uvicorn's ``WebSocketsSansIOProtocol`` attributes (``conn``, ``transport``,
``writable``...), so ``pyproject.toml`` pins uvicorn's minor version and
``tests/stream/test_uvicorn_ws.py`` checks frames, order and close codes over a real socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.http11 import Request, Response

__all__ = ["BulkWriteWebSocketProtocol"]

logger = logging.getLogger(__name__)


class BulkWriteWebSocketProtocol(WebSocketsSansIOProtocol):
    """Data frames sent in one event-loop turn go out in one ``transport.write``."""

    #: Written at once past this many queued bytes, so the transport's back-pressure
    #: (``pause_writing`` at its 64 KiB high-water mark) stops a sender mid-chunk rather
    #: than after a whole backlog is copied into the socket buffer.
    max_queued_bytes = 64 * 1024

    _flush_handle: asyncio.Handle | None = None
    _queued_bytes = 0
    _app_closed = False  # the app sent its close (any later send is its own misuse)

    def handle_connect(self, event: Request) -> None:
        """A handshake websockets refuses (no ``Sec-WebSocket-Key``, a bad version...) is
        answered in the API's JSON error shape, not websockets' plain text."""
        refused = self.conn.accept(event)
        if refused.status_code == 101:
            super().handle_connect(event)
            return
        message = refused.body.decode("utf-8", "replace").strip() or refused.reason_phrase
        body = orjson.dumps({"error": {"code": "bad_handshake", "message": message}})
        headers = Headers([(k, v) for k, v in refused.headers.raw_items()
                           if k.lower() not in ("content-type", "content-length")])
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(body))
        self.request = event
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.conn.send_response(Response(refused.status_code, refused.reason_phrase,
                                         headers, body))
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

    async def run_asgi(self) -> None:
        app = self.app

        async def app_then_flush(scope: Any, receive: Any, send: Any) -> None:
            # uvicorn closes the transport as soon as the app returns: write what is
            # queued first, or an app that ends without a close would lose its last frames.
            try:
                await app(scope, receive, send)
            finally:
                self._flush()
            if self.initial_response is not None and self.close_sent:
                # A denial (429, 401, 403...) answered the handshake: uvicorn would log
                # "returned without completing handshake" at ERROR for each one.
                self.handshake_complete = True

        self.app = app_then_flush
        await super().run_asgi()

    async def send(self, message: ASGISendEvent) -> None:
        if (self.close_sent and not self._app_closed and self.handshake_complete
                and self.initial_response is None
                and message["type"] in ("websocket.send", "websocket.close")):
            # uvicorn closed the connection on its own (a keepalive timeout, a frame over
            # ws_max_size): to the app that is a gone peer, as after a disconnect, not the
            # misuse RuntimeError uvicorn raises for a send after the app's own close.
            raise ClientDisconnected()
        if message["type"] == "websocket.close":
            self._app_closed = True
        if (message["type"] != "websocket.send" or not self.handshake_complete
                or self.close_sent or self.initial_response is not None):
            # Handshake, close, denial response, or too late: uvicorn's own path, which
            # writes whatever is queued first, so frames keep their order.
            await super().send(message)
            return
        await self.writable.wait()  # the transport's back-pressure, as uvicorn does
        if self.disconnected:
            raise ClientDisconnected()
        try:
            data = message.get("bytes")
            if data is None:
                text = message.get("text")
                if text is None:
                    return
                data = text.encode()
                self.conn.send_text(data)
            else:
                self.conn.send_binary(data)
        except InvalidState:
            raise ClientDisconnected() from None
        self._queued_bytes += len(data)
        if self._queued_bytes >= self.max_queued_bytes:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:  # decoded twice (here and by uvicorn): client messages are small
                (self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)).decode()
            except UnicodeDecodeError:
                # uvicorn logs a traceback for it: a client's mistake is one WARNING.
                logger.warning("WS client %s sent a text frame that is not UTF-8; closed (1007)",
                               self.client[0] if self.client else "?")
                self.frames = []
                self.conn.fail(1007, "invalid UTF-8")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._queued_bytes = 0
        if self.transport.is_closing():
            return
        output = self.conn.data_to_send()
        if output:
            self.transport.write(b"".join(output))
