"""Writes need ``Content-Type: application/json``.

A browser sends a cross-origin POST of ``text/plain``, a form or ``multipart/form-data``
without asking first (no CORS preflight), so the CORS rules never get a say. Requiring
JSON makes every write a preflighted request, which a disallowed origin fails; a write
with any other body type is refused with 415 before the route reads it. DELETE carries no
body and is always preflighted cross-origin, so it needs no content type.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from stream.web.errors import error_response

__all__ = ["BODY_METHODS", "JsonWritesMiddleware", "is_json"]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: str | None) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``)."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


class JsonWritesMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = Headers(scope=scope).get("content-type")
        if is_json(content_type):
            await self.app(scope, receive, send)
            return
        got = f"got {content_type[:60]!r}" if content_type else "got none"
        await error_response(415, "unsupported_media_type",
                             f"a write needs Content-Type: application/json ({got})",
                             )(scope, receive, send)
