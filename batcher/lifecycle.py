"""The runner's state, held once: an enum that only moves forward, and a way to wait on it.

Everything that used to be an event of its own ("closing", "stopped") is a state here;
one internal event wakes every waiter on each change, and each waiter checks the state.
"""

from __future__ import annotations

import enum

import anyio

__all__ = ["Lifecycle", "RunnerState"]


class RunnerState(enum.Enum):
    """NEW -> RUNNING -> CLOSING (flushing) -> CLOSED; ``aclose`` on a NEW runner skips to
    CLOSED."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


_ORDER = {state: rank for rank, state in enumerate(RunnerState)}


class Lifecycle:
    """A ``RunnerState`` that tasks can wait on."""

    __slots__ = ("_changed", "_state")

    def __init__(self) -> None:
        self._state = RunnerState.NEW
        # Made when first waited on, so a runner can be built outside an event loop.
        self._changed: anyio.Event | None = None

    @property
    def state(self) -> RunnerState:
        return self._state

    @property
    def closing(self) -> bool:
        """True once shutdown has begun (CLOSING or CLOSED)."""
        return _ORDER[self._state] >= _ORDER[RunnerState.CLOSING]

    def advance(self, state: RunnerState) -> None:
        """Move to ``state``; moving back (or staying) is ignored: shutdown is idempotent."""
        if _ORDER[state] <= _ORDER[self._state]:
            return
        self._state = state
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def reached(self, state: RunnerState) -> None:
        """Return once the state is ``state`` or past it."""
        while _ORDER[self._state] < _ORDER[state]:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
