"""Allowed ``Host`` names, against DNS rebinding.

A page on ``evil.example`` whose name an attacker re-points at 127.0.0.1 is, to the
browser, same-origin with whatever listens there: only the ``Host`` it sends
(``evil.example``) gives it away. So a request for a host name we do not serve is refused
with a typed 400 ``bad_host`` before anything else sees it. ``/healthz`` is exempt: load
balancers probe by IP address, and it tells nothing but the version and whether we are up.

The patterns, and what is enforced when none are set, are in ``stream.web.names``.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from stream.web.errors import error_response
from stream.web.names import host_allowed, host_of

__all__ = ["EXEMPT_PATHS", "HostGuard"]

EXEMPT_PATHS = frozenset({"/healthz"})


class HostGuard:
    """Pure ASGI middleware, so it guards WebSocket handshakes as well as HTTP."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.patterns = tuple(allowed_hosts)
        self.allow_any = "*" in self.patterns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.allow_any or scope["type"] not in ("http", "websocket")
                or scope["path"] in EXEMPT_PATHS):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host")
        host = host_of(header)
        if host is not None and host_allowed(host, self.patterns):
            await self.app(scope, receive, send)
            return
        shown = (header or "")[:80]
        response = error_response(
            400, "bad_host",
            f"host {shown!r} is not served here (CHAINWIRE_ALLOWED_HOSTS)" if header
            else "a Host header is required")
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).send_denial_response(response)
        else:
            await response(scope, receive, send)
