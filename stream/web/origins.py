"""Cross-origin rules: which web pages may use this server from a browser.

A page is always allowed on its own origin (the ``Origin`` a browser sends names the
``Host`` it asked). Other origins are allowed only when listed in
``CHAINWIRE_CORS_ORIGINS``: they get CORS headers (so a dashboard there can read the API
and ``/events``); anything else is refused with a typed 403 ``origin_not_allowed``, a
WebSocket handshake before it is accepted (browsers do not apply CORS to WebSockets, so
the server must). A request without ``Origin`` (curl, a bot) is not a browser page's and
passes.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from stream.web.errors import error_response
from stream.web.names import origin_allowed

__all__ = ["CORS_HEADERS", "CORS_METHODS", "OriginGuard", "TypedCORSMiddleware"]

CORS_METHODS = ("GET", "HEAD", "POST", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type", "Last-Event-ID")


class TypedCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight in our error shape, not plain text."""

    def __init__(self, app: ASGIApp, allow_origins: Iterable[str]) -> None:
        # No credentials: keys travel in Authorization or ?key=, never in cookies.
        super().__init__(app, allow_origins=tuple(allow_origins), allow_methods=CORS_METHODS,
                         allow_headers=CORS_HEADERS)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {k: v for k, v in response.headers.items()
                   if k.lower().startswith(("access-control-", "vary"))}
        detail = bytes(response.body).decode(errors="replace")
        return error_response(400, "cors_refused",
                              f"{detail} (CHAINWIRE_CORS_ORIGINS lists the allowed origins)",
                              headers=headers)


class OriginGuard:
    """Refuses requests and WebSocket handshakes from pages on origins not allowed.

    Pure ASGI, outside the routes: a refused handshake is answered before it is accepted
    and before it takes a connection slot. CORS preflights never get here (the CORS
    middleware, outside this one, answers them).
    """

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str]) -> None:
        self.app = app
        self.allowed = tuple(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin_allowed(origin, headers.get("host"), self.allowed):
            await self.app(scope, receive, send)
            return
        response = error_response(
            403, "origin_not_allowed",
            f"origin {str(origin)[:80]!r} may not use this server "
            "(CHAINWIRE_CORS_ORIGINS lists the allowed origins)")
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).send_denial_response(response)
        else:
            await response(scope, receive, send)
