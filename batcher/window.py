"""The batch window: the pure core that groups events of one type.

``Windows`` never awaits and never reads a clock: the caller passes ``now`` (any monotonic
clock, in seconds) to every call, so tests drive it synchronously with made-up times. Each
event type has at most one open window; a window closes when it holds ``max_events`` events
(reason ``size``), when ``max_age`` seconds have passed since its first event (reason
``time``), or when the caller drains it at shutdown (reason ``shutdown``).

An event that arrives after its type's window has expired never joins that window: ``add``
first closes every expired window, so a window's contents depend only on the times given,
not on how promptly the caller polled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from batcher.events import Event

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_EVENTS",
    "FLUSH_REASONS",
    "ClosedWindow",
    "FlushReason",
    "WindowConfig",
    "WindowLimits",
    "Windows",
]

#: A window closes at this many events unless configured otherwise.
DEFAULT_MAX_EVENTS = 10
#: ... or this many seconds after its first event.
DEFAULT_MAX_AGE = 0.5

FlushReason = Literal["size", "time", "shutdown"]
#: Every reason a window closes, in the order stats report them.
FLUSH_REASONS: tuple[FlushReason, ...] = ("size", "time", "shutdown")


@dataclass(frozen=True, slots=True)
class WindowLimits:
    """When a window of one type closes.

    ``max_events=1`` (or ``max_age=0``) makes a type flush at once: each event becomes its
    own batch the moment it arrives.
    """

    max_events: int = DEFAULT_MAX_EVENTS
    max_age: float = DEFAULT_MAX_AGE

    def __post_init__(self) -> None:
        # bool is an int: reject it, ``max_events=True`` is always a mistake.
        if isinstance(self.max_events, bool) or not isinstance(self.max_events, int):
            raise ValueError(f"max_events must be an integer, got {self.max_events!r}")
        if self.max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {self.max_events}")
        if not isinstance(self.max_age, int | float) or isinstance(self.max_age, bool):
            raise ValueError(f"max_age must be a number of seconds, got {self.max_age!r}")
        if not math.isfinite(self.max_age) or self.max_age < 0:
            raise ValueError(f"max_age must be a finite number >= 0, got {self.max_age}")

    @property
    def immediate(self) -> bool:
        """True when every event of this type is its own batch."""
        return self.max_events == 1 or self.max_age == 0


#: Limits that make every event its own batch (``CHAINWIRE_BATCHING=off``).
_IMMEDIATE = WindowLimits(max_events=1, max_age=0.0)


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """The window limits: a default for every type and optional per-type overrides.

    ``enabled=False`` turns aggregation off: each event is its own batch, for comparison.
    """

    default: WindowLimits = field(default_factory=WindowLimits)
    per_type: Mapping[str, WindowLimits] = field(default_factory=dict)
    enabled: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.default, WindowLimits):
            raise ValueError(f"default must be a WindowLimits, got {self.default!r}")
        for name, limits in self.per_type.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"per_type keys must be event type names, got {name!r}")
            if not isinstance(limits, WindowLimits):
                raise ValueError(f"per_type[{name!r}] must be a WindowLimits, got {limits!r}")
        # A private copy: a caller mutating its dict later must not change live limits.
        object.__setattr__(self, "per_type", dict(self.per_type))

    def limits_for(self, event_type: str) -> WindowLimits:
        """The limits that apply to ``event_type``."""
        if not self.enabled:
            return _IMMEDIATE
        return self.per_type.get(event_type, self.default)


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """The events of one type that one window collected; they become one batch.

    ``opened_at`` and ``closed_at`` are on the caller's clock (the one passed as ``now``).
    """

    type: str
    events: tuple[Event, ...]
    opened_at: float
    closed_at: float
    reason: FlushReason

    @property
    def count(self) -> int:
        return len(self.events)


@dataclass(slots=True)
class _Open:
    events: list[Event]
    opened_at: float
    deadline: float


class Windows:
    """Per-type batch windows (pure: no I/O, no clock, no awaiting).

    Call ``add`` for each event, ``poll`` when ``next_deadline()`` has passed, and
    ``drain`` at shutdown. Each returns the windows that closed, in closing order (for
    windows closed by the same call: oldest first).
    """

    __slots__ = ("_config", "_earliest", "_open")

    def __init__(self, config: WindowConfig | None = None) -> None:
        self._config = config if config is not None else WindowConfig()
        if not isinstance(self._config, WindowConfig):
            raise ValueError(f"config must be a WindowConfig, got {self._config!r}")
        self._open: dict[str, _Open] = {}
        # The earliest deadline of the open windows (inf when none), kept up to date so
        # ``add`` does not scan every window for each event.
        self._earliest = math.inf

    @property
    def config(self) -> WindowConfig:
        return self._config

    @property
    def pending_events(self) -> int:
        """How many events sit in open windows."""
        return sum(len(w.events) for w in self._open.values())

    @property
    def open_types(self) -> tuple[str, ...]:
        """The types that have an open window."""
        return tuple(self._open)

    def add(self, event: Event, now: float) -> list[ClosedWindow]:
        """Put ``event`` in its type's window; return the windows that closed."""
        closed = self.poll(now) if now >= self._earliest else []
        limits = self._config.limits_for(event.type)
        window = self._open.get(event.type)
        if window is None:
            if limits.immediate:
                closed.append(ClosedWindow(event.type, (event,), now, now, "size"))
                return closed
            window = _Open([event], now, now + limits.max_age)
            self._open[event.type] = window
            self._earliest = min(self._earliest, window.deadline)
        else:
            window.events.append(event)
        # ``>=``: limits are per type and a window never outgrows the current limit.
        if len(window.events) >= limits.max_events:
            del self._open[event.type]
            self._update_earliest()
            closed.append(self._close(event.type, window, now, "size"))
        return closed

    def poll(self, now: float) -> list[ClosedWindow]:
        """Close every window whose deadline is at or before ``now``."""
        expired = [(w.deadline, t) for t, w in self._open.items() if w.deadline <= now]
        expired.sort()
        closed = []
        for _, event_type in expired:
            window = self._open.pop(event_type)
            closed.append(self._close(event_type, window, now, "time"))
        if closed:
            self._update_earliest()
        return closed

    def next_deadline(self) -> float | None:
        """When the next open window expires (caller's clock), or None if none is open."""
        return None if self._earliest == math.inf else self._earliest

    def drain(self, now: float) -> list[ClosedWindow]:
        """Close every open window (shutdown), oldest first."""
        ordered = sorted(self._open.items(), key=lambda item: item[1].opened_at)
        self._open.clear()
        self._earliest = math.inf
        return [self._close(t, w, now, "shutdown") for t, w in ordered]

    def _update_earliest(self) -> None:
        self._earliest = min((w.deadline for w in self._open.values()), default=math.inf)

    @staticmethod
    def _close(event_type: str, window: _Open, now: float, reason: FlushReason) -> ClosedWindow:
        return ClosedWindow(event_type, tuple(window.events), window.opened_at, now, reason)
