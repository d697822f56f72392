"""``PoolHost``: what the subscriptions may ask of the pool, and nothing more.

The subscription registry (``subscriptions.py``) places subscriptions on servers the pool
opened; it never reaches into the pool. ``ServerPool`` implements this Protocol and hands
itself to the registry typed as ``PoolHost``, so the registry does not import the pool and
a test (or, later, a broker) can host it with a fake. The rules about subscriptions (which
servers may carry them: not lagging, fewest subscriptions first) stay with the registry;
the pool applies them only through the ``candidates`` function it is given.

What the registry gets back are the pool's own ``Upstream`` objects, of which it uses
``url``, ``usable()``, ``batch()``, ``tip_height`` and ``tip_header``: that surface is part
of the seam too, so a fake host hands out objects with those members.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol

from .config import PoolConfig
from .upstream import Upstream

__all__ = ["Candidates", "PoolHost"]

#: The servers a caller may use now, best first, leaving out ``exclude`` (tried already).
Candidates = Callable[[AbstractSet[Upstream]], Sequence[Upstream]]


class PoolHost(Protocol):
    """The pool as the subscription registry sees it."""

    @property
    def config(self) -> PoolConfig:
        """The pool's limits (chunk size, retries, timeouts, lag, network)."""
        ...

    def check_open(self) -> None:
        """``RuntimeError`` unless the pool is open."""
        ...

    def active_servers(self) -> Sequence[Upstream]:
        """The servers opened so far (the lazy pool's current members), in opening order."""
        ...

    def grow(self, count: int) -> None:
        """Count ``count`` more requests and open servers as the growth policy says."""
        ...

    def open_servers(self, count: int) -> None:
        """Open servers until ``count`` are active (bounded by ``max_size`` and the list)."""
        ...

    async def wait_changed(self) -> None:
        """Return when some server's state changes (connected, lost, banned)."""
        ...

    async def acquire(self, exclude: AbstractSet[Upstream], candidates: Candidates) -> Upstream:
        """The first of ``candidates(exclude)`` with the fewest requests in flight; while
        there is none, wait for servers that are connecting (opening a spare if none is),
        as the pool's own requests do. ``NoServerAvailable`` when none came in time."""
        ...
