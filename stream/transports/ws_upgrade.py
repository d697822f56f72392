"""``/ws`` over plain HTTP: a 426 that says what to do, not a misleading 404."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from stream.web.errors import error_response

__all__ = ["upgrade_required"]


async def upgrade_required(request: Request) -> Response:
    # RFC 9110 15.5.22: a 426 names the protocol to switch to in an Upgrade header.
    return error_response(
        426, "upgrade_required",
        "/ws is a WebSocket endpoint: connect with a WebSocket client "
        "(Upgrade: websocket); for a plain HTTP stream use GET /events",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"})
