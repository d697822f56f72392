"""One WebSocket connection's protocol as a pure state machine: no socket, no clock, no await.

What happened goes in (a frame arrived, the watch list was updated, the stream ended, the
server is shutting down...); what to do comes out as a list of actions for the I/O layer
(``stream.transports.ws``) to perform in order:

- ``Send(message)``: one JSON message to the client;
- ``Watch(addresses)``: add addresses to the watch list, then report ``watched()``,
  ``watch_refused()`` (the list is full) or ``watch_failed()`` (the subscription takes
  effect only once the watch did);
- ``StartStream(filter, resume_from, epoch)``: (re)start the feed: subscribe to the hub,
  replay from ``resume_from`` then go live; ``stream_refused()`` if the hub is closed;
- ``SetFilter(filter)``: change what the running feed delivers;
- ``Close(code, reason)``: send the close frame (at most once per connection);
- ``End()``: stop everything this connection runs (the feed and the read loop).

States: ``OPEN`` (said hello, nothing subscribed yet) -> ``STREAMING`` (a feed runs) ->
``CLOSING`` (our close frame is out) -> ``CLOSED`` (the peer is gone, or we let it go).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batcher.events import EVENT_TYPES
from stream.fanout.filters import ClientFilter
from stream.fanout.hub import DisconnectReason
from stream.transports.ws_protocol import (
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_POLICY",
    "CLOSE_SLOW_CLIENT",
    "CLOSE_TOO_BIG",
    "Action",
    "Close",
    "End",
    "Interest",
    "Send",
    "SessionLimits",
    "SetFilter",
    "StartStream",
    "Watch",
    "WsSession",
    "WsState",
]

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SLOW_CLIENT = 4008

SHUTTING_DOWN = "server shutting down"
UNAVAILABLE = ProtocolError("unavailable", "the store is unavailable; try again shortly")


class WsState(enum.Enum):
    OPEN = "open"
    STREAMING = "streaming"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Send:
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Watch:
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StartStream:
    filter: ClientFilter
    resume_from: int | None
    epoch: str | None


@dataclass(frozen=True, slots=True)
class SetFilter:
    filter: ClientFilter


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class End:
    pass


Action = Send | Watch | StartStream | SetFilter | Close | End


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The per-connection limits the protocol enforces (``Limits``' WS part)."""

    max_addresses: int = 1000
    max_message_bytes: int = 64 * 1024
    max_errors: int = 50

    def __post_init__(self) -> None:
        if self.max_addresses < 0:
            raise ValueError(f"max_addresses must be >= 0, got {self.max_addresses}")
        for name in ("max_message_bytes", "max_errors"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


@dataclass
class Interest:
    """What the connection asked for so far (subscribe adds, unsubscribe removes)."""

    types: set[str] | None = None  # None: every type
    # None: address events of every address. Once a client names addresses it is narrowed
    # to them for good: unsubscribing the last one means "none", never "all".
    addresses: set[str] | None = None
    min_sats: int = 0

    def to_filter(self) -> ClientFilter:
        types = frozenset(self.types) if self.types is not None else None
        addresses = frozenset(self.addresses) if self.addresses is not None else None
        return ClientFilter(types, addresses, self.min_sats)

    def describe(self) -> dict[str, Any]:
        return {"types": sorted(self.types) if self.types is not None else None,
                "addresses": sorted(self.addresses) if self.addresses is not None else None,
                "min_sats": self.min_sats}


class WsSession:
    """The protocol of one ``/ws`` connection; ``validate_address`` returns the canonical
    address or raises ``ValueError`` (network-aware, supplied by the server)."""

    def __init__(self, limits: SessionLimits,
                 validate_address: Callable[[str], str]) -> None:
        self.limits = limits
        self._validate_address = validate_address
        self.state = WsState.OPEN
        self.interest = Interest()
        self.errors = 0  # protocol errors so far; at ``max_errors`` the connection closes
        # Every address this connection had watched, subscribed still or not: its budget of
        # ``max_addresses``, so subscribe/unsubscribe churn cannot grow the watch list.
        self.named: set[str] = set()
        self._pending: Subscribe | None = None  # waiting for its addresses to be watched

    @property
    def reading(self) -> bool:
        """Whether the I/O layer should read (and hand over) the next frame."""
        return self.state in (WsState.OPEN, WsState.STREAMING)

    def hello(self, *, version: str, epoch: str, last_seq: int, network: str) -> list[Action]:
        return [Send({
            "op": "hello", "version": version, "epoch": epoch, "last_seq": last_seq,
            "network": network,
            "limits": {"max_addresses": self.limits.max_addresses,
                       "max_message_bytes": self.limits.max_message_bytes},
        })]

    def receive(self, raw: str | bytes) -> list[Action]:
        """One text or binary frame from the client."""
        if not self.reading or self._pending is not None:
            return []  # closing, or (never, with one reader) a watch still in flight
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > self.limits.max_message_bytes:
            return self._close(CLOSE_TOO_BIG,
                               f"message over {self.limits.max_message_bytes} bytes")
        try:
            command = parse_client_message(raw, self._validate_address)
            if isinstance(command, Ping):
                return [Send({"op": "pong"})]
            if isinstance(command, Subscribe):
                return self._subscribe(command)
            return self._unsubscribe(command)
        except ProtocolError as exc:
            return self._error(exc)

    def _error(self, exc: ProtocolError) -> list[Action]:
        self.errors += 1
        actions: list[Action] = [Send(exc.to_message())]
        if self.errors >= self.limits.max_errors:
            actions += self._close(CLOSE_POLICY, "too many errors")
        return actions

    def _subscribe(self, command: Subscribe) -> list[Action]:
        if command.addresses and len(self.named | set(command.addresses)) > \
                self.limits.max_addresses:
            raise ProtocolError(
                # Distinct, over the connection's life: the README says so.
                "limit_exceeded", f"at most {self.limits.max_addresses} addresses per connection")
        if command.addresses:
            # Watched first: a subscription the store could not record never takes effect.
            self._pending = command
            return [Watch(command.addresses)]
        return self._apply(command)

    def watched(self) -> list[Action]:
        """The addresses of the pending ``Watch`` are on the watch list."""
        command, self._pending = self._pending, None
        if command is None or not self.reading:
            return []
        return self._apply(command)

    def watch_refused(self, limit: int) -> list[Action]:
        """The watch list is full: nothing was added and nothing changes (an error counted:
        a client that keeps asking is told to stop)."""
        self._pending = None
        if not self.reading:
            return []
        return self._error(ProtocolError(
            "watch_limit", f"the watch list is full (at most {limit} addresses); nothing "
            "was added"))

    def watch_failed(self) -> list[Action]:
        """The store could not record the pending ``Watch``: nothing changes (no error
        counted: it is not the client's fault)."""
        self._pending = None
        return [Send(UNAVAILABLE.to_message())] if self.reading else []

    def _apply(self, command: Subscribe) -> list[Action]:
        interest = self.interest
        if command.types is not None:
            interest.types = (interest.types or set()) | set(command.types)
        if command.addresses:
            interest.addresses = (interest.addresses or set()) | set(command.addresses)
            self.named.update(command.addresses)
        if command.min_sats is not None:
            interest.min_sats = command.min_sats
        actions: list[Action] = [Send({"op": "subscribed", **interest.describe()})]
        if self.state is WsState.OPEN or command.resume_from is not None:
            self.state = WsState.STREAMING
            actions.append(StartStream(interest.to_filter(), command.resume_from, command.epoch))
        else:
            actions.append(SetFilter(interest.to_filter()))
        return actions

    def _unsubscribe(self, command: Unsubscribe) -> list[Action]:
        interest = self.interest
        if command.types is not None and interest.types is not None:
            interest.types -= command.types
        elif command.types is not None:
            interest.types = set(EVENT_TYPES) - command.types  # "everything but these"
        if interest.addresses is not None:
            interest.addresses -= set(command.addresses)
        actions: list[Action] = [Send({"op": "subscribed", **interest.describe()})]
        if self.state is WsState.STREAMING:
            actions.append(SetFilter(interest.to_filter()))
        return actions

    def stream_refused(self) -> list[Action]:
        """``StartStream`` found the hub closed: the server is going away."""
        return self._close(CLOSE_GOING_AWAY, SHUTTING_DOWN)

    def stream_ended(self, reason: DisconnectReason | None, resume_from: int) -> list[Action]:
        """The feed ran out (the hub cut or ended it); ``resume_from`` is the client's
        cursor: everything up to it was delivered."""
        actions: list[Action] = []
        if reason is DisconnectReason.SLOW_CLIENT:
            actions = self._close(CLOSE_SLOW_CLIENT, f"slow client; resume_from={resume_from}")
        elif reason is DisconnectReason.SHUTDOWN:
            actions = self._close(CLOSE_GOING_AWAY, SHUTTING_DOWN)
        return [*actions, End()]

    def stream_failed(self, resume_from: int) -> list[Action]:
        """The store failed under the feed (replay): come back later from the cursor."""
        return self._close(CLOSE_INTERNAL_ERROR, f"store unavailable; resume_from={resume_from}")

    def shutdown(self) -> list[Action]:
        """The server is shutting down: every connection says goodbye, subscribed or not."""
        return [*self._close(CLOSE_GOING_AWAY, SHUTTING_DOWN), End()]

    def peer_gone(self) -> list[Action]:
        """The client's socket is gone (a send or a receive failed): nothing more to say."""
        self.state = WsState.CLOSED
        return []

    def send_stalled(self) -> list[Action]:
        """The client stopped reading: let it go without a close frame (it would block)."""
        self.state = WsState.CLOSED
        return [End()]

    def _close(self, code: int, reason: str) -> list[Action]:
        if self.state in (WsState.CLOSING, WsState.CLOSED):
            return []  # one close frame per connection
        self.state = WsState.CLOSING
        return [Close(code, reason)]
