"""Exceptions raised by the Electrum pool.

Two families: a ``ServerError`` is the server's definitive answer about one request (bad
param, no such transaction) and is never retried elsewhere; a ``RetryableError`` says
something about the *server* (gone, slow, throttling us) and moves the request on.
"""

from __future__ import annotations

__all__ = [
    "ConnectionLost",
    "ElectrumError",
    "NoServerAvailable",
    "RequestTimeout",
    "RetryableError",
    "ServerError",
    "ServerThrottled",
]

# JSON-RPC codes sent by aiorpcx/ElectrumX when a session is over its cost budget or busy.
EXCESSIVE_RESOURCE_USAGE = -101
SERVER_BUSY = -102


class ElectrumError(Exception):
    """Base class of every error raised by ``stream.electrum``."""


class ServerError(ElectrumError):
    """The server answered with a JSON-RPC error for this request (e.g. "no such
    transaction"). Definitive: retrying on another server would give the same answer."""

    def __init__(self, code: int, message: str, server: str = "") -> None:
        super().__init__(code, message, server)
        self.code = code
        self.message = message
        self.server = server

    def __str__(self) -> str:
        where = f" from {self.server}" if self.server else ""
        return f"server error {self.code}{where}: {self.message}"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ServerError)
            and (self.code, self.message) == (other.code, other.message)
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))


class RetryableError(ElectrumError):
    """A failure of the server rather than of the request: try another server."""

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(server, detail)
        self.server = server
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.server}: {self.detail}"


class ConnectionLost(RetryableError):
    """The connection closed (or could not be opened) before the answer came."""


class RequestTimeout(RetryableError):
    """No answer within the request timeout."""


class ServerThrottled(RetryableError):
    """The server refused for load ("excessive resource usage", "server busy")."""


class NoServerAvailable(ElectrumError):
    """Every attempt failed, or no server could be reached. ``__cause__`` holds the last
    server's error."""
