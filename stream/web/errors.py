"""Errors over HTTP: a 4xx/5xx status with ``{"error": {"code", "message"}}``, always."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from batcher.store import StoreError

__all__ = ["ApiError", "api_error_handler", "error_response", "http_exception_handler",
           "internal_error_handler", "store_error_handler"]

logger = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
          405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
          429: "too_many", 503: "unavailable"}


class ApiError(Exception):
    """Raised by handlers for a client-visible error; the message is shown as is."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in our shape instead of plain text."""
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """A bug's answer, in our shape too (Starlette still logs the traceback): the client
    learns nothing of the exception, and a JSON client is not handed plain text."""
    return error_response(500, "internal", "internal server error")


async def store_error_handler(request: Request, exc: Exception) -> Response:
    """The store failed under a request (PostgreSQL down, a connection cut): not the
    client's fault and not a bug, so a typed 503 to retry, and one log line, no traceback."""
    assert isinstance(exc, StoreError)
    logger.warning("store unavailable for %s %s: %s", request.method, request.url.path,
                   type(exc).__name__)
    return error_response(503, "unavailable", "the store is unavailable; retry shortly",
                          headers={"Retry-After": "2"})
