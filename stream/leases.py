"""Leases on watched addresses that only stream subscriptions asked for: a pure table.

A leased address is *held* while at least one SSE or WebSocket subscriber names it; once
the last one leaves, its lease runs ``lease_seconds`` (long enough for a reconnect to
resume with no gap) and then it is due to be unwatched. An API call *pins* it: permanent
until ``DELETE``. Holders are counted for every address, leased or not, so pinning and
then unpinning (a DELETE, then a new subscription) never loses count.

No clock, no await: ``now`` is passed in (the keeper in ``stream.services`` supplies it).
Every lease has the same length and ``now`` only grows, so the order in which leases start
running is also the order in which they end: an insertion-ordered dict is the queue, and
finding what is due costs nothing for the leases that are not.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Leases"]


class Leases:
    """Which leased addresses are held, and when the unheld ones are due."""

    def __init__(self, lease_seconds: float) -> None:
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        self.lease_seconds = lease_seconds
        self._holders: dict[str, int] = {}
        self._leased: set[str] = set()
        # Leased and unheld: address -> when it is due, in due order.
        self._running: dict[str, float] = {}

    def __len__(self) -> int:
        """How many addresses are leased (held or not)."""
        return len(self._leased)

    def is_leased(self, address: str) -> bool:
        return address in self._leased

    def holders(self, address: str) -> int:
        return self._holders.get(address, 0)

    def hold(self, addresses: Iterable[str]) -> None:
        """A subscriber names ``addresses`` (one count each): their leases stop running."""
        for address in addresses:
            self._holders[address] = self._holders.get(address, 0) + 1
            self._running.pop(address, None)

    def release(self, addresses: Iterable[str], now: float) -> None:
        """A subscriber no longer names ``addresses`` (each held once by it)."""
        for address in addresses:
            count = self._holders.get(address, 0) - 1
            if count > 0:
                self._holders[address] = count
                continue
            self._holders.pop(address, None)
            if address in self._leased:
                self._start(address, now)

    def lease(self, addresses: Iterable[str], now: float) -> None:
        """``addresses`` are watched on a lease (new from a stream, or found so at start)."""
        for address in addresses:
            self._leased.add(address)
            if address not in self._holders:
                self._start(address, now)

    def pin(self, addresses: Iterable[str]) -> None:
        """``addresses`` are permanent now (an API call), or no longer watched at all."""
        for address in addresses:
            self._leased.discard(address)
            self._running.pop(address, None)

    def due(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` leased, unheld addresses whose lease has run out, oldest first
        (still in the table: ``pin`` them once the store has let them go)."""
        found: list[str] = []
        for address, deadline in self._running.items():
            if deadline > now or len(found) >= limit:
                break
            found.append(address)
        return found

    def next_deadline(self) -> float | None:
        """When the next lease runs out (None: none is running)."""
        return next(iter(self._running.values()), None)

    def stats(self) -> dict[str, int]:
        return {"leased": len(self._leased), "expiring": len(self._running),
                "held": len(self._holders)}

    def _start(self, address: str, now: float) -> None:
        self._running.pop(address, None)  # to the back: the latest deadline
        self._running[address] = now + self.lease_seconds
