"""The address producer's per-address state: one ``WatchedAddress`` per watched address.

Everything the producer knows about an address lives in its entry, so watching is adding
one entry and unwatching is removing it: nothing of an unwatched address survives into a
later watch of the same address. ``WatchedAddresses`` holds the entries and the queues
that order the work (addresses to subscribe, to unsubscribe, to reconcile, with a timer);
those queues only point at entries and are kept by its methods, never by hand.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["WatchedAddress", "WatchedAddresses"]


# eq=False: an entry is compared by identity (``is_current``), never by its contents; an
# unwatched entry and its re-watched successor may hold the same values.
@dataclass(slots=True, eq=False)
class WatchedAddress:
    """What the producer keeps about one watched address."""

    address: str
    scripthash: str
    #: The transactions already reported: txid -> height (0 = mempool), as stored.
    known: dict[str, int] = field(default_factory=dict)
    #: The last ``confirmed`` count sent per mined transaction (up to the depth).
    confirmations: dict[str, int] = field(default_factory=dict)
    #: (received_sats, sent_sats) per transaction of the history: a cache.
    amounts: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: The status last notified (``notified`` False: none yet, or it is out of date).
    notified: bool = False
    status: str | None = None
    #: Histories in a row that did not match ``status`` (a server that is behind).
    stale: int = 0
    #: After a reorg above its transactions: when to read its history anyway. Its heights
    #: are unknown until the server, having applied the reorg, notifies a new status (or
    #: that time passes); no confirmation updates meanwhile.
    reorged_until: float | None = None
    #: Transactions missing from a history (or unmined in it) -> when first seen so: a
    #: server that is behind may say that, so ``dropped`` / ``unconfirmed`` wait a grace.
    losing: dict[str, float] = field(default_factory=dict)
    #: When to read the history again for the losses held back.
    recheck_at: float | None = None
    #: False after a restart until its changes were compared with the stored event log
    #: (events stored just before a crash, not yet recorded in ``known``).
    log_checked: bool = True

    def expect(self, status: str | None) -> None:
        """A status was notified: the next history should match it."""
        self.notified, self.status = True, status

    def matches(self, status: str | None) -> bool:
        """Whether a history with ``status`` is the one last notified (or none was)."""
        return not self.notified or status == self.status

    def deadline(self) -> float:
        """The earliest timer set (``math.inf``: none)."""
        timers = [t for t in (self.reorged_until, self.recheck_at) if t is not None]
        return min(timers, default=math.inf)


class WatchedAddresses:
    """The watched addresses by address and scripthash, and the producer's work queues.

    The queues are ordered sets (dicts): ``dirty`` addresses are reconciled in the order
    they were marked, first come first served across rounds.
    """

    def __init__(self) -> None:
        self._entries: dict[str, WatchedAddress] = {}
        self._by_scripthash: dict[str, WatchedAddress] = {}
        self._dirty: dict[str, None] = {}
        self._timed: dict[str, None] = {}  # entries with a timer set
        self._to_subscribe: dict[str, None] = {}
        self._to_unsubscribe: dict[str, str] = {}  # address -> scripthash

    # -- entries -----------------------------------------------------------------------
    def add(self, address: str, scripthash: str) -> WatchedAddress | None:
        """Watch ``address`` with fresh state; None if it is watched already."""
        if address in self._entries:
            return None
        entry = WatchedAddress(address, scripthash)
        self._entries[address] = entry
        self._by_scripthash[scripthash] = entry
        self._to_unsubscribe.pop(address, None)
        self._to_subscribe[address] = None
        return entry

    def remove(self, address: str) -> bool:
        """Forget ``address`` and everything known about it; True if it was watched."""
        entry = self._entries.pop(address, None)
        if entry is None:
            return False
        self._by_scripthash.pop(entry.scripthash, None)
        self._dirty.pop(address, None)
        self._timed.pop(address, None)
        self._to_subscribe.pop(address, None)
        self._to_unsubscribe[address] = entry.scripthash
        return True

    def get(self, address: str) -> WatchedAddress | None:
        return self._entries.get(address)

    def by_scripthash(self, scripthash: str) -> WatchedAddress | None:
        return self._by_scripthash.get(scripthash)

    def is_current(self, entry: WatchedAddress) -> bool:
        """Whether ``entry`` is still the watched one (not unwatched, nor re-watched anew)."""
        return self._entries.get(entry.address) is entry

    def __contains__(self, address: object) -> bool:
        return address in self._entries

    def __iter__(self) -> Iterator[WatchedAddress]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    # -- the reconcile queue -----------------------------------------------------------
    def mark_dirty(self, addresses: Iterable[str]) -> None:
        """Reconcile these addresses (status -> history diff) in a coming round."""
        for address in addresses:
            if address in self._entries:
                self._dirty[address] = None

    def mark_all_dirty(self) -> None:
        self._dirty.update(dict.fromkeys(self._entries))

    def is_dirty(self, address: str) -> bool:
        return address in self._dirty

    @property
    def dirty_count(self) -> int:
        return len(self._dirty)

    def take_dirty(self, limit: int) -> list[WatchedAddress]:
        """The first ``limit`` dirty addresses, no longer dirty."""
        taken = list(itertools.islice(self._dirty, limit))
        for address in taken:
            del self._dirty[address]
        return [self._entries[a] for a in taken]

    def any_stale(self) -> bool:
        """Whether a dirty address waits for a server that is behind (a stale address is
        always dirty again when a round ends)."""
        return any(self._entries[a].stale for a in self._dirty)

    def forget_statuses(self) -> None:
        """Notifications were lost: the statuses notified are out of date."""
        for entry in self._entries.values():
            entry.notified, entry.status = False, None

    # -- timers ------------------------------------------------------------------------
    def set_reorg_timer(self, entry: WatchedAddress, deadline: float) -> None:
        entry.reorged_until = deadline
        self._timed[entry.address] = None

    def clear_reorg_timer(self, entry: WatchedAddress) -> None:
        entry.reorged_until = None

    def set_recheck(self, entry: WatchedAddress, due: float) -> None:
        """Read the history again by ``due`` (the earliest of the rechecks asked)."""
        entry.recheck_at = due if entry.recheck_at is None else min(entry.recheck_at, due)
        self._timed[entry.address] = None

    def next_deadline(self) -> float:
        """When the earliest timer fires (``math.inf``: none set)."""
        deadline = math.inf
        for address in list(self._timed):
            entry_deadline = self._entries[address].deadline()
            if entry_deadline == math.inf:
                del self._timed[address]
            deadline = min(deadline, entry_deadline)
        return deadline

    def expire(self, now: float) -> None:
        """Timers due by ``now`` fire: their addresses become dirty."""
        for address in list(self._timed):
            entry = self._entries[address]
            for name in ("reorged_until", "recheck_at"):
                due = getattr(entry, name)
                if due is not None and due <= now:
                    setattr(entry, name, None)
                    self._dirty[address] = None
            if entry.deadline() == math.inf:
                del self._timed[address]

    # -- subscriptions -----------------------------------------------------------------
    def take_unsubscribe(self) -> list[str]:
        """The scripthashes of addresses unwatched since the last call."""
        gone = list(self._to_unsubscribe.values())
        self._to_unsubscribe.clear()
        return gone

    def to_subscribe(self, limit: int) -> list[str]:
        """Up to ``limit`` watched addresses not subscribed yet, oldest first."""
        return list(itertools.islice(self._to_subscribe, limit))

    @property
    def subscribe_backlog(self) -> int:
        """How many watched addresses are not subscribed yet."""
        return len(self._to_subscribe)

    @property
    def pending_subscriptions(self) -> bool:
        """Whether addresses wait to be subscribed or unsubscribed."""
        return bool(self._to_subscribe or self._to_unsubscribe)

    def subscribed(self, address: str) -> None:
        self._to_subscribe.pop(address, None)
