"""Security headers on every HTTP answer (the dashboard, its static files, the API).

The dashboard loads only its own script and style and talks only to this server (and to
the allowed origins), so the policy names nothing else: an injected script or a framing
page gets nowhere. The same headers on JSON cost nothing and keep a browser from sniffing
an answer into HTML.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeadersMiddleware", "content_security_policy", "security_headers"]


def content_security_policy(connect_origins: Iterable[str] = ()) -> str:
    connect = " ".join(["'self'", *(o for o in connect_origins if o != "*")])
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src {connect}",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def security_headers(connect_origins: Iterable[str] = ()) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(connect_origins),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


class SecurityHeadersMiddleware:
    """Adds the headers to each response start (a route that set one keeps its own)."""

    def __init__(self, app: ASGIApp, connect_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.headers = list(security_headers(connect_origins).items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
