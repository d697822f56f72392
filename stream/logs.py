"""Logs an operator can read: no secrets, no per-connection noise, no floods.

- ``RedactSecrets``: API keys never reach a log line. uvicorn prints request targets
  (``GET /events?key=...`` in the access log, ``"WebSocket /ws?key=..."``) and, at debug,
  the websockets library prints every handshake header (``< Authorization: Bearer ...``).
- ``QuietConnectionLines``: uvicorn's and websockets' per-connection lines ("connection
  open", "connection closed", ``"WebSocket /ws" [accepted]``) are debug, like the HTTP
  access log: at info, a thousand bots would be thousands of lines. uvicorn's "Invalid
  HTTP request received." is dropped: ``EdgeH11Protocol`` logs that one line itself, with
  the client and the status it answered.
- ``AcceptErrorLimiter``: a loop exception handler. Out of file descriptors, asyncio
  fails ``accept()`` up to ``backlog`` times per wake-up and logs a traceback for each
  (thousands a second); this says it once per ``interval`` with a count.

``install_log_filters()`` puts the filters on uvicorn's loggers (records are filtered
where they are made, whatever handler writes them); ``stream.serving`` calls it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ACCEPT_FAILED", "AcceptErrorLimiter", "QuietConnectionLines", "RedactSecrets",
           "Throttle", "install_log_filters", "redact"]

logger = logging.getLogger(__name__)

MASK = "***"

# `key=` in a query string (our API keys), and the values of credential headers in
# websockets' debug dump of a handshake (`< Authorization: Bearer ...`).
_KEY_PARAM = re.compile(r"([?&](?:api_)?key=)[^&\s\"']*", re.IGNORECASE)
_SECRET_HEADER = re.compile(
    r"^([<>] (?:authorization|proxy-authorization|cookie|set-cookie): ).*$",
    re.IGNORECASE | re.MULTILINE)


def redact(text: str) -> str:
    """``text`` with API keys and credential header values masked."""
    if "key=" in text.lower():
        text = _KEY_PARAM.sub(rf"\1{MASK}", text)
    if ": " in text:
        text = _SECRET_HEADER.sub(rf"\1{MASK}", text)
    return text


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message (the formatted message replaces the args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# What websockets (through uvicorn's protocol) and uvicorn say once per connection.
_PER_CONNECTION = ("connection open", "connection closed", "connection rejected (")
_UVICORN_WS_LINE = '%s - "WebSocket %s"'  # "[accepted]", "403", a denial's status
_DROPPED = frozenset({"Invalid HTTP request received."})


class QuietConnectionLines(logging.Filter):
    """Per-connection lines become debug (kept only when debug is on); see the module."""

    def __init__(self, debug_enabled: Callable[[], bool]) -> None:
        super().__init__()
        self.debug_enabled = debug_enabled

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if record.levelno != logging.INFO:
            return message not in _DROPPED
        if message.startswith(_PER_CONNECTION) or message.startswith(_UVICORN_WS_LINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.debug_enabled()
        return True


def install_log_filters() -> None:
    """Put the filters on uvicorn's loggers, once (idempotent)."""
    error_log = logging.getLogger("uvicorn.error")
    # First: it matches uvicorn's format strings, which the redactor replaces.
    if not any(isinstance(f, QuietConnectionLines) for f in error_log.filters):
        error_log.addFilter(QuietConnectionLines(lambda: error_log.isEnabledFor(logging.DEBUG)))
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())


class Throttle:
    """Counts occurrences and lets one through per ``interval`` seconds (pure: the
    caller passes the clock)."""

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = interval
        self._last: float | None = None
        self._count = 0

    def hit(self, now: float) -> int | None:
        """Record one occurrence; return how many to report now (those since the last
        report, this one included), or ``None`` while within the interval."""
        self._count += 1
        if self._last is not None and now - self._last < self.interval:
            return None
        self._last, count, self._count = now, self._count, 0
        return count


#: asyncio's message when ``accept()`` fails with EMFILE, ENFILE, ENOBUFS or ENOMEM.
ACCEPT_FAILED = "socket.accept() out of system resource"

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class AcceptErrorLimiter:
    """A loop exception handler: accept failures as one WARNING per ``interval``;
    everything else goes to the ``previous`` handler (or asyncio's default)."""

    def __init__(self, previous: ExceptionHandler | None = None, *, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.previous = previous
        self.throttle = Throttle(interval)
        self.clock = clock

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        count = self.throttle.hit(self.clock())
        if count is not None:
            logger.warning(
                "cannot accept connections: %s (%d failed accept() calls since the last "
                "report; reported at most every %g s): raise the file descriptor limit "
                "(ulimit -n) or lower the connection caps",
                context.get("exception"), count, self.throttle.interval)
