"""Query parameters, checked: a bad one is a 400 naming it, never a framework default."""

from __future__ import annotations

from starlette.requests import Request

from stream.web.errors import ApiError

__all__ = ["MAX_INT", "int_param", "parse_uint", "single_param"]

MAX_INT = 2**63 - 1
_MAX_DIGITS = len(str(MAX_INT))


def parse_uint(raw: str) -> int | None:
    """``raw`` as an integer from 0 to ``MAX_INT``, or ``None`` if it is anything else.

    Plain ASCII digits only (``int()`` would take "+5", "1_0" and other scripts' digits),
    and the length is checked before converting: ``int()`` refuses more than 4300 digits
    with a ValueError (CPython's guard against quadratic conversion), which would be a 500.
    """
    if not (raw.isascii() and raw.isdigit()):
        return None
    digits = raw.lstrip("0") or "0"  # int() counts leading zeros against its limit too
    if len(digits) > _MAX_DIGITS:
        return None
    value = int(digits)
    return value if value <= MAX_INT else None


def int_param(request: Request, name: str, default: int) -> int:
    """A non-negative integer query parameter, or ``default`` when absent or empty."""
    raw = single_param(request, name)
    if raw is None or raw == "":
        return default
    value = parse_uint(raw)
    if value is None:
        raise ApiError(400, "bad_request",
                       f"{name} must be an integer from 0 to {MAX_INT}, got {raw[:40]!r}")
    return value


def single_param(request: Request, name: str) -> str | None:
    """A parameter that may be given once: ``?limit=5&limit=x`` is refused rather than
    quietly reading one of the two."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApiError(400, "bad_request", f"{name} given {len(values)} times; give it once")
    return values[0] if values else None
