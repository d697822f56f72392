"""Typed, frozen views of the pool: what every reader of its state gets.

``ServerPool.snapshot()`` returns a ``PoolSnapshot``; ``ServerPool.stats()`` is its
``to_dict()`` (the /api/v1/stats shape). ``PoolSnapshot.servers_tip`` is the one
"servers' tip" rule; ``states.server_status`` the one labelling rule for a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .policy import majority_tip
from .states import PoolState, ServerStatus

__all__ = ["PoolSnapshot", "ServerSnapshot", "SubscriptionFigures"]


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """One configured server at one moment (``latency_ms``, ``backoff_s``, ``banned_s``
    rounded to 0.1 as stats show them; ``ban_reason`` only while banned)."""

    url: str
    state: ServerStatus
    in_flight: int
    requests: int
    failures: int
    latency_ms: float | None
    height: int | None
    connects: int
    backoff_s: float
    protocol: str | None
    ban_reason: str | None
    banned_s: float

    def to_dict(self) -> dict[str, Any]:
        """The ``stats()["servers"][i]`` shape (key order included)."""
        return {
            "url": self.url,
            "state": self.state.value,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "latency_ms": self.latency_ms,
            "height": self.height,
            "connects": self.connects,
            "backoff_s": self.backoff_s,
            "protocol": self.protocol,
            "ban_reason": self.ban_reason,
            "banned_s": self.banned_s,
        }


@dataclass(frozen=True, slots=True)
class SubscriptionFigures:
    """Scripthashes subscribed, scripthashes being moved, header subscriptions open."""

    scripthashes: int
    moving: int
    header_subscriptions: int

    def to_dict(self) -> dict[str, int]:
        return {
            "scripthashes": self.scripthashes,
            "moving": self.moving,
            "header_subscriptions": self.header_subscriptions,
        }


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """The pool at one moment: ``size`` servers opened of ``configured``, ``requests``
    since start, and every configured server in configuration order."""

    network: str
    state: PoolState
    configured: int
    size: int
    connected: int
    requests: int
    in_flight: int
    subscriptions: SubscriptionFigures
    servers: tuple[ServerSnapshot, ...]

    def to_dict(self) -> dict[str, Any]:
        """The ``ServerPool.stats()`` shape, as /api/v1/stats shows it."""
        return {
            "network": self.network,
            "state": self.state.value,
            "configured": self.configured,
            "size": self.size,
            "connected": self.connected,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "subscriptions": self.subscriptions.to_dict(),
            "servers": [server.to_dict() for server in self.servers],
        }

    def servers_tip(self) -> int | None:
        """The servers' tip: the lower median of the heights of the servers labelled
        ``connected`` (so one server ahead, or on a branch the block producer rejected,
        holds nothing up; lagging, backed-off and banned ones do not count). None while
        no such server has a tip."""
        return majority_tip(
            s.height for s in self.servers
            if s.state is ServerStatus.CONNECTED and s.height is not None
        )
