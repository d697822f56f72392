"""``PoolConfig``: every limit of the pool, named, defaulted and validated once."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, fields
from typing import Any

from .policy import Backoff, GrowthPolicy
from .validate import validate_network

__all__ = ["PoolConfig"]


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Pool settings. Every field is a keyword argument of ``ServerPool`` too."""

    network: str = "mainnet"
    # Growth (see GrowthPolicy).
    burst: int = 5
    grow_every: int = 10
    min_size: int = 15
    surge_in_flight: int = 50
    surge_step: int = 2
    max_size: int = 30
    # Failover: how many *other* servers a failed request is retried on.
    max_retries: int = 3
    # Batches.
    max_chunk: int = 100
    per_server: int = 25
    parallel_threshold: int = 10
    # A batch that would use servers still connecting waits this long for them.
    spread_wait: float = 0.5
    # Timeouts (seconds). The request timeout is per JSON-RPC message (a chunk for batches).
    request_timeout: float = 30.0
    connect_timeout: float = 10.0
    close_timeout: float = 5.0
    # Back-off of a failing server.
    backoff_base: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    # Health: ping servers idle this long, checking every ping_interval.
    ping_idle_after: float = 120.0
    ping_interval: float = 300.0
    # A server whose tip is more than this many blocks behind the majority carries no
    # subscriptions.
    max_lag_blocks: int = 1
    # Header subscriptions listen on this many servers by default.
    header_servers: int = 2
    # Notifications buffered per subscription before the subscriber is told it overflowed.
    notification_buffer: int = 10_000
    # aiorpcx's framer drops messages over 1 MB; real responses (a big block's history, a
    # batch of large transactions) reach 8 MB.
    max_message_bytes: int = 32 * 1024 * 1024
    # Protocol: 1.4 .. 1.6 keeps blockchain.scripthash.* available.
    client_name: str = "chainwire/0.1"
    protocol_min: str = "1.4"
    protocol_max: str = "1.6"
    # TLS: self-signed certificates are accepted unless tls_verify (or a custom
    # ssl_context); pinned_certs maps "host:port" to the SHA-256 hex of the server's
    # DER certificate.
    tls_verify: bool = False
    ssl_context: ssl.SSLContext | None = None
    pinned_certs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_network(self.network)
        positive_ints = (
            "burst", "grow_every", "min_size", "surge_step", "max_size", "max_chunk",
            "per_server", "header_servers", "notification_buffer", "max_message_bytes",
        )
        for name in positive_ints:
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("surge_in_flight", "max_retries", "parallel_threshold", "max_lag_blocks"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in (
            "request_timeout", "connect_timeout", "close_timeout", "ping_idle_after",
            "ping_interval", "spread_wait",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if _version(self.protocol_min) > _version(self.protocol_max):
            raise ValueError(
                f"protocol_min must be <= protocol_max, got {self.protocol_min} > "
                f"{self.protocol_max}"
            )
        if _version(self.protocol_max) > (1, 6):
            # 1.7 drops blockchain.scripthash.*, which the producers need.
            raise ValueError(f"protocol_max must be <= 1.6, got {self.protocol_max}")
        normalized = {}
        for key, fingerprint in self.pinned_certs.items():
            digest = fingerprint.replace(":", "").lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"pinned_certs[{key!r}] must be a SHA-256 hex fingerprint")
            normalized[key.lower()] = digest
        object.__setattr__(self, "pinned_certs", normalized)
        # Building them validates the rest (min_size <= max_size, backoff bounds).
        self.growth()
        self.backoff()

    def growth(self) -> GrowthPolicy:
        return GrowthPolicy(
            burst=self.burst, step=self.grow_every, min_size=self.min_size,
            surge_in_flight=self.surge_in_flight, surge_step=self.surge_step,
            max_size=self.max_size,
        )

    def backoff(self) -> Backoff:
        return Backoff(self.backoff_base, self.backoff_factor, self.backoff_max)

    def limits(self) -> dict[str, Any]:
        """The effective settings as plain values (logged at start, shown in stats)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("ssl_context", "pinned_certs")
        }


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise ValueError(f"protocol version must look like '1.4', got {text!r}") from None
