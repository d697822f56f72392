"""The log filters and the accept-failure limiter, without a server (``stream/logs.py``);
``test_edge_e2e.py`` checks them in a real server's log."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from stream.logs import (
    ACCEPT_FAILED,
    AcceptErrorLimiter,
    QuietConnectionLines,
    RedactSecrets,
    Throttle,
    redact,
)


@pytest.mark.parametrize(("line", "expected"), [
    ('127.0.0.1:5 - "GET /events?key=s3cret&types=block HTTP/1.1" 200',
     '127.0.0.1:5 - "GET /events?key=***&types=block HTTP/1.1" 200'),
    ('"WebSocket /ws?types=a&KEY=s3cret" [accepted]', '"WebSocket /ws?types=a&KEY=***" [accepted]'),
    ("< Authorization: Bearer s3cret", "< Authorization: ***"),
    ("< cookie: session=s3cret", "< cookie: ***"),
    ("< host: example.org", "< host: example.org"),
    ("monkey=business without a query", "monkey=business without a query"),
])
def test_redact_masks_keys_and_credential_headers_only(line: str, expected: str) -> None:
    assert redact(line) == expected


def record(msg: str, *args: Any, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, args or None, None)


def test_the_redactor_rewrites_the_formatted_message() -> None:
    entry = record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/ws?key=s3cret")
    assert RedactSecrets().filter(entry)
    assert entry.getMessage() == '127.0.0.1:5 - "WebSocket /ws?key=***" [accepted]'


@pytest.mark.parametrize("debug", [False, True])
def test_per_connection_lines_are_debug(debug: bool) -> None:
    quiet = QuietConnectionLines(lambda: debug)
    for line in (record("connection open"), record("connection closed"),
                 record("connection rejected (%d %s)", 429, "Too Many Requests"),
                 record('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", "/ws")):
        assert quiet.filter(line) is debug
        assert line.levelname == "DEBUG"
    started = record("Application startup complete.")
    assert quiet.filter(started) and started.levelname == "INFO"
    assert not quiet.filter(record("Invalid HTTP request received.", level=logging.WARNING))
    assert quiet.filter(record("Unsupported upgrade request.", level=logging.WARNING))


def test_throttle_reports_the_first_then_one_count_per_interval() -> None:
    throttle = Throttle(10.0)
    assert throttle.hit(100.0) == 1
    assert [throttle.hit(100.0 + t) for t in (0.1, 5.0, 9.9)] == [None, None, None]
    assert throttle.hit(110.0) == 4  # the three held back and this one
    assert throttle.hit(119.9) is None
    assert throttle.hit(125.0) == 2
    with pytest.raises(ValueError, match="interval"):
        Throttle(0)


def test_accept_failures_are_one_warning_per_interval_and_the_rest_passes_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    passed: list[dict[str, Any]] = []
    limiter = AcceptErrorLimiter(lambda loop, context: passed.append(context),
                                 interval=10.0, clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        failure = {"message": ACCEPT_FAILED,
                   "exception": OSError(errno.EMFILE, "Too many open files")}
        with caplog.at_level(logging.WARNING, logger="stream.logs"):
            for step in range(5000):  # 5000 failures over 20 s
                now[0] = step * 0.004
                limiter(loop, failure)
            limiter(loop, {"message": "something else"})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "stream.logs"]
    assert len(lines) == 2  # at 0 s and at 10 s
    assert all("Too many open files" in line for line in lines)
    assert "(2500 failed accept() calls" in lines[1]
    assert not any(r.exc_info for r in caplog.records)
    assert passed == [{"message": "something else"}]
