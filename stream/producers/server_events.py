"""``server`` events: an upstream Electrum server joined, left, lagged, backed off or was banned.

The pool's ``snapshot()`` labels each configured server with a ``ServerStatus`` (idle,
connecting, connected, backoff, lagging, banned, closed). ``ServerEvents`` polls it and
emits one event per server whose label changed since the last one reported for it
(``key`` = server url)::

    {"host": "ssl://host:50002", "state": "backoff", "previous": "connected",
     "height": 905123, "latency_ms": 41.2, "reason": null}

``previous`` is the state of the server's last ``server`` event (null for its first);
``reason`` says why a ``banned`` server was banned (null for other states).
Two labels are never reported: "idle" (configured, never opened: the pool is lazy) and
"connecting" (a step on the way: reporting it would make every reconnect attempt of a
server that is down two events). So a server that keeps failing to connect is one
``backoff`` event, not a flap; a server that comes back is ``connected`` again. Any other
label, including ones the pool may add later, is reported as it is. Polling misses what
starts and ends between two polls: connecting -> connected -> backoff within one poll
leaves no event. The diff is the pure :func:`server_changes`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus

from batcher.events import Event
from stream.electrum import ServerPool, ServerSnapshot, ServerStatus

from .base import EventSink, make_event

__all__ = ["UNREPORTED_STATES", "ServerEvents", "server_changes"]

logger = logging.getLogger(__name__)

UNREPORTED_STATES: Final = frozenset({ServerStatus.IDLE.value, ServerStatus.CONNECTING.value})

# What one server's event is built from: url, state label, height, latency_ms, ban_reason.
_Row = tuple[str, str, Any, Any, Any]


def server_changes(
    reported: Mapping[str, str], servers: Iterable[ServerSnapshot | Mapping[str, Any]], *,
    ts: float,
) -> tuple[list[Event], dict[str, str]]:
    """The ``server`` events between the states last reported (url -> state) and the pool's
    servers now, and the new reported states. Pure.

    ``servers`` are the pool's ``ServerSnapshot``s, or rows shaped like their
    ``to_dict()`` (as /api/v1/stats shows them); a row without a url or state is skipped."""
    now = dict(reported)
    events = []
    for server in servers:
        row = _row(server)
        if row is None:
            continue
        url, state, height, latency_ms, ban_reason = row
        if state in UNREPORTED_STATES or reported.get(url) == state:
            continue
        events.append(make_event("server", url, {
            "host": url,
            "state": state,
            "previous": reported.get(url),
            "height": height,
            "latency_ms": latency_ms,
            # Why a banned server is (the pool's ban_reason); null otherwise.
            "reason": ban_reason if state == ServerStatus.BANNED.value else None,
        }, ts=ts))
        now[url] = state
    return events, now


def _row(server: ServerSnapshot | Mapping[str, Any]) -> _Row | None:
    if isinstance(server, ServerSnapshot):
        return (server.url, server.state.value, server.height, server.latency_ms,
                server.ban_reason)
    url, state = server.get("url"), server.get("state")
    if not isinstance(url, str) or not isinstance(state, str):
        return None
    return url, state, server.get("height"), server.get("latency_ms"), server.get("ban_reason")


class ServerEvents:
    """Polls the pool's server states every ``poll_seconds`` and emits what changed."""

    def __init__(self, pool: ServerPool, sink: EventSink, *, poll_seconds: float = 1.0) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self._pool = pool
        self._sink = sink
        self._poll = poll_seconds
        self._reported: dict[str, str] = {}
        # Figures for stats and tests.
        self.polls = 0
        self.emitted = 0

    @property
    def reported(self) -> Mapping[str, str]:
        """Each server's state as last reported (servers never reported are absent)."""
        return dict(self._reported)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.poll()
            await anyio.sleep(self._poll)

    async def poll(self) -> None:
        """Compare once and emit the changes (snapshot() only reads memory: no I/O)."""
        try:
            servers = self._pool.snapshot().servers
            events, reported = server_changes(self._reported, servers, ts=time.time())
        except Exception:  # a failure to read the pool must not stop the producer
            logger.exception("reading the pool's server states failed")
            self.polls += 1
            return
        if events:
            await self._sink.emit(events)
            self.emitted += len(events)
        self._reported = reported
        self.polls += 1
