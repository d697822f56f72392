"""Parse and validate Electrum server strings (``tcp://host:port`` / ``ssl://host:port``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ServerAddress", "parse_server", "parse_servers"]

Scheme = Literal["tcp", "ssl"]
_SCHEMES: tuple[Scheme, ...] = ("tcp", "ssl")


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One Electrum server endpoint.

    ``url`` is the canonical string (``ssl://host:port``) used as the server's name in
    stats, logs and notifications.
    """

    scheme: Scheme
    host: str
    port: int

    @property
    def use_tls(self) -> bool:
        return self.scheme == "ssl"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def parse_server(text: str) -> ServerAddress:
    """Parse ``tcp://host:port`` or ``ssl://host:port`` (IPv6 hosts in brackets).

    Raises ``ValueError`` naming the offending string.
    """
    if not isinstance(text, str):
        raise ValueError(f"server must be a string like 'ssl://host:50002', got {text!r}")
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(f"server must start with tcp:// or ssl://, got {text!r}")
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise ValueError(f"server needs [ipv6]:port, got {text!r}")
        port_text = tail[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise ValueError(f"server needs an explicit port, got {text!r}")
        if ":" in host:
            raise ValueError(f"IPv6 hosts must be in brackets, got {text!r}")
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"server has an invalid host, got {text!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"server port must be 1-65535, got {text!r}")
    kind: Scheme = "ssl" if scheme.lower() == "ssl" else "tcp"
    return ServerAddress(kind, host.lower(), int(port_text))


def parse_servers(texts: object) -> tuple[ServerAddress, ...]:
    """Parse a list of server strings (or one comma-separated string), dropping duplicates
    while keeping the order. Raises ``ValueError`` for a bad entry or an empty list."""
    if isinstance(texts, str):
        items = [t for t in (part.strip() for part in texts.split(",")) if t]
    elif isinstance(texts, (list, tuple)):
        items = list(texts)
    else:
        raise ValueError(f"servers must be a list of 'tcp://host:port' strings, got {texts!r}")
    seen: dict[ServerAddress, None] = {}
    for item in items:
        seen.setdefault(parse_server(item), None)
    if not seen:
        raise ValueError("servers must name at least one Electrum server")
    return tuple(seen)
