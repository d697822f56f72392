"""Query parameters, checked: a bad one is a 400 naming it, never a framework default."""

from __future__ import annotations

from starlette.requests import Request

from stream.http_errors import ApiError

__all__ = ["int_param"]


def int_param(request: Request, name: str, default: int) -> int:
    """A non-negative integer query parameter, or ``default`` when absent or empty."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(400, "bad_request", f"{name} must be a non-negative integer, got {raw!r}")
    return value
