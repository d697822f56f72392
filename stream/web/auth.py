"""API keys: ``Authorization: Bearer KEY`` or ``?key=KEY`` (EventSource cannot set headers).

With no keys configured the server is open. ``/healthz`` (load balancers) and the
dashboard's static page stay open; the data behind them does not.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from stream.web.errors import error_response

__all__ = ["OPEN_PATHS", "ApiKeyMiddleware"]

OPEN_PATHS = ("/", "/healthz", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)


class ApiKeyMiddleware:
    """Pure ASGI middleware so it guards WebSocket handshakes as well as HTTP."""

    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    def _presented(self, scope: Scope) -> str | None:
        authorization = Headers(scope=scope).get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return QueryParams(scope.get("query_string", b"").decode("latin-1")).get("key")

    def _allowed(self, key: str | None) -> bool:
        if key is None:
            return False
        candidate = key.encode()
        # Compare against every key, in constant time, so timing reveals nothing.
        return any([hmac.compare_digest(candidate, k) for k in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.keys:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        key = self._presented(scope)
        if self._allowed(key):
            await self.app(scope, receive, send)
            return
        message = ("missing API key: send 'Authorization: Bearer KEY' or add ?key=KEY"
                   if key is None else "invalid API key")
        response = error_response(401, "unauthorized", message,
                                  headers={"WWW-Authenticate": "Bearer"})
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).send_denial_response(response)
        else:
            await response(scope, receive, send)
