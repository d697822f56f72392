"""sse-starlette's ``EventSourceResponse`` with one task per stream instead of four.

sse-starlette runs each stream as four tasks in a task group: the body, the pings, a
disconnect listener and a shutdown listener. On asyncio with anyio every task costs a
few kB (the task, its handle, cancel scope and finished-event), and an idle stream holds
all four for its whole life. Here:

- the body runs in the one task it needs (it waits on the hub while the handler waits
  on the socket);
- the disconnect listener and the pings share the handler's own task: it waits for
  ``http.disconnect`` at most ``ping`` seconds at a time and pings when that runs out
  (uvicorn's ``receive()`` can be cancelled without losing anything);
- no shutdown listener: Chainwire ends its streams itself (the hub closes, each stream
  sends its retry hint; ``GracefulServer`` turns sse-starlette's signal drain off), so
  that task only ever waited.

Everything else is sse-starlette's own code: the body's sends, the per-send timeout
(``SendTimeoutError``), the ping's format, the final empty chunk, HEAD.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.event import ensure_bytes
from starlette.types import Message, Receive, Scope, Send

__all__ = ["LeanEventSourceResponse"]


class LeanEventSourceResponse(EventSourceResponse):
    """An SSE response running the body in one task; pings and the disconnect share the
    handler's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # asyncio's lock makes its waiters' deque only when someone waits (anyio's has
        # one from the start: ~0.8 kB per idle stream); the server runs on asyncio.
        self._send_lock = asyncio.Lock()  # type: ignore[assignment]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() == "HEAD":
            await super().__call__(scope, receive, send)  # sse-starlette's own answers
            return
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._body, send, tasks.cancel_scope)
                await self._listen_and_ping(receive, send)
                tasks.cancel_scope.cancel()  # the client left: the body stops
        except BaseExceptionGroup as group:
            raise _single(group) from None  # the bare error, as sse-starlette raises it
        if self.background is not None:
            await self.background()

    async def _body(self, send: Send, scope: anyio.CancelScope) -> None:
        await self._stream_response(send)
        scope.cancel()  # the stream ended: stop listening

    async def _listen_and_ping(self, receive: Receive, send: Send) -> None:
        interval = self.ping_interval or math.inf  # 0: no pings
        while self.active:
            message: Message | None = None
            with anyio.move_on_after(interval):
                message = await receive()
            if message is None:  # nothing for `interval` seconds: keep proxies awake
                await self._ping_once(send)
            elif message["type"] == "http.disconnect":
                self.active = False
                if self.client_close_handler_callable is not None:
                    await self.client_close_handler_callable(message)
                return

    async def _ping_once(self, send: Send) -> None:
        ping = (self.ping_message_factory() if self.ping_message_factory is not None
                else ServerSentEvent(comment=f"ping - {datetime.now(UTC)}", sep=self.sep))
        async with self._send_lock:
            if self.active:
                await self._send_with_timeout(send, {
                    "type": "http.response.body", "body": ensure_bytes(ping, self.sep),
                    "more_body": True})


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
