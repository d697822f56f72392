"""The WebSocket protocol's client messages, parsed and checked without any I/O.

Client -> server: ``subscribe`` (types, addresses, min_sats, resume_from, epoch),
``unsubscribe`` (types, addresses), ``ping``. Anything else becomes a ``ProtocolError``
carrying the code and message the server sends back as ``{"op": "error", ...}``; the
connection stays up for these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from batcher.events import EVENT_TYPES

__all__ = [
    "ClientCommand",
    "Ping",
    "ProtocolError",
    "Subscribe",
    "Unsubscribe",
    "parse_client_message",
]

AddressValidator = Callable[[str], str]

#: The largest seq or amount a client may name: what the stores hold (int64).
MAX_INT = 2**63 - 1


class ProtocolError(Exception):
    """A recoverable client error: ``code`` is stable for programs, ``message`` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_message(self) -> dict[str, str]:
        return {"op": "error", "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Subscribe:
    types: frozenset[str] | None
    addresses: tuple[str, ...]
    min_sats: int | None
    resume_from: int | None
    epoch: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    types: frozenset[str] | None
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    pass


ClientCommand = Subscribe | Unsubscribe | Ping


def parse_client_message(raw: str | bytes, validate_address: AddressValidator) -> ClientCommand:
    """Parse one client frame. ``validate_address`` returns the canonical address or raises
    ``ValueError`` with the reason (network-aware; supplied by the server)."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_json", "message is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_request", "message must be a JSON object with an \"op\"")
    op = message.get("op")
    if op == "ping":
        return Ping()
    if op == "subscribe":
        return Subscribe(
            types=_types(message),
            addresses=_addresses(message, validate_address),
            min_sats=_optional_int(message, "min_sats"),
            resume_from=_optional_int(message, "resume_from"),
            epoch=_optional_str(message, "epoch"),
        )
    if op == "unsubscribe":
        return Unsubscribe(types=_types(message), addresses=_addresses(message, validate_address))
    if op is None:
        raise ProtocolError("bad_request", "message has no \"op\"")
    raise ProtocolError(
        "unknown_op", f"unknown op {str(op)[:40]!r}; expected subscribe, unsubscribe or ping"
    )


def _types(message: dict[str, Any]) -> frozenset[str] | None:
    value = message.get("types")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ProtocolError("bad_request", "\"types\" must be a list of strings")
    unknown = sorted(set(value) - EVENT_TYPES)
    if unknown:
        raise ProtocolError(
            "unknown_type",
            f"unknown event type {unknown[0][:40]!r}; expected some of "
            f"{', '.join(sorted(EVENT_TYPES))}",
        )
    return frozenset(value)


def _addresses(message: dict[str, Any], validate_address: AddressValidator) -> tuple[str, ...]:
    value = message.get("addresses", [])
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ProtocolError("bad_request", "\"addresses\" must be a list of strings")
    canonical = []
    for address in value:
        try:
            canonical.append(validate_address(address))
        except ValueError as exc:
            raise ProtocolError("invalid_address", str(exc)) from None
    return tuple(dict.fromkeys(canonical))


def _optional_int(message: dict[str, Any], name: str) -> int | None:
    value = message.get(name)
    if value is None:
        return None
    # orjson gives ints up to 2**64-1 (bigger ones become floats); the stores hold int64.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError("bad_request", f"\"{name}\" must be a non-negative integer")
    if value > MAX_INT:
        raise ProtocolError("bad_request", f"\"{name}\" must be at most {MAX_INT}")
    return value


def _optional_str(message: dict[str, Any], name: str) -> str | None:
    value = message.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError("bad_request", f"\"{name}\" must be a string")
