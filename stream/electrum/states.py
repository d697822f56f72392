"""The state enums of the pool and its servers, and the one rule labelling a server.

``ServerState`` is where a server's connection loop is; ``ServerStatus`` is what readers
are shown (``ServerSnapshot.state``, stats, ``server`` events): the connection state, or
what overrides it (a ban, a back-off, the lag rule). Pure.
"""

from __future__ import annotations

import enum

__all__ = ["PoolState", "ServerState", "ServerStatus", "server_status"]


class ServerState(enum.Enum):
    """Where a server's connection loop is."""

    IDLE = "idle"  # configured, never opened (the pool is lazy)
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"  # disconnected, waiting before the next attempt
    CLOSED = "closed"


class PoolState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class ServerStatus(enum.Enum):
    """A server's label in snapshots, stats and ``server`` events."""

    IDLE = "idle"  # configured, never opened (the pool is lazy)
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"  # failing or throttling: kept away from for backoff_s
    LAGGING = "lagging"  # connected, but too far behind the majority to carry subscriptions
    BANNED = "banned"  # caught lying: out of the pool for banned_s, with ban_reason
    CLOSED = "closed"  # the pool is closed


def server_status(
    state: ServerState, *, banned: bool, backing_off: bool, lagging: bool
) -> ServerStatus:
    """The label of a server whose connection is in ``state``.

    A ban says most (and outlives the connection), then a back-off of a connected server
    (disconnected ones are in ``ServerState.BACKOFF`` already), then the lag rule, which
    only applies to a connected server. A closed pool's servers are ``closed``, banned or not.
    """
    if state is ServerState.CLOSED:
        return ServerStatus.CLOSED
    if banned:
        return ServerStatus.BANNED
    if state is ServerState.CONNECTED and backing_off:
        return ServerStatus.BACKOFF
    if state is ServerState.CONNECTED and lagging:
        return ServerStatus.LAGGING
    return ServerStatus(state.value)
