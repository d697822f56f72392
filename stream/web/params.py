"""Query parameters, checked: a bad one is a 400 naming it, never a framework default."""

from __future__ import annotations

from starlette.requests import Request

from stream.web.errors import ApiError

__all__ = ["MAX_INT", "int_param"]

MAX_INT = 2**63 - 1


def int_param(request: Request, name: str, default: int) -> int:
    """A non-negative integer query parameter, or ``default`` when absent or empty."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    # Plain ASCII digits only (int() would take "+5", "1_0" and other scripts' digits),
    # and within what the databases store (int64).
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_INT:
        raise ApiError(400, "bad_request",
                       f"{name} must be an integer from 0 to {MAX_INT}, got {raw[:40]!r}")
    return int(raw)
