"""Restoring the address producer's watch list after a restart, in the background.

Start-up must not wait on it: with 100k watched addresses the reads take seconds, and
``/healthz`` (and the block producer) must not. So the producer reports started at once
and this reads the stored state in bulk (the list in one query, then the known
transactions and their stored amounts a page of addresses per query), handing each page's
entries over as it is read.

Until its page is read an address is *pending*: watched, its state on the way. The watch
commands keep running meanwhile, so the rules are: ``unwatch`` of a pending address (or of
one not read yet) means it is not restored; ``watch`` of a pending address changes
nothing (its stored state is what it must resume from).
"""

from __future__ import annotations

import itertools
from collections.abc import Container, Mapping
from dataclasses import dataclass

from batcher.store import ProducerState

from .watched import WatchedAddress

__all__ = ["RESTORE_PAGE", "Restore", "RestoredPage"]

#: Addresses read per store query (two queries per page: known txs, their amounts).
RESTORE_PAGE = 2000


@dataclass(frozen=True, slots=True)
class RestoredPage:
    """One page of the stored state: addresses in watch order, their known txs and the
    stored amounts of the transactions that may still get events."""

    addresses: list[str]
    known: Mapping[str, dict[str, int]]
    amounts: Mapping[str, dict[str, tuple[int, int]]]


class Restore:
    """The stored watch list, read in pages; ``tip`` is the stored tip at start, which the
    confirmation counts already sent are rebuilt from."""

    def __init__(self, store: ProducerState, *, tip: int, depth: int,
                 page: int = RESTORE_PAGE) -> None:
        if page < 1:
            raise ValueError(f"page must be >= 1, got {page}")
        self._store = store
        self.tip = tip
        self._depth = depth
        self._page = page
        self._pending: dict[str, None] = {}
        self._listed = False  # the watch list has been read
        self._unwatched: set[str] = set()  # before the list was read
        self.done = False

    # -- the watch commands, while restoring -----------------------------------------
    def is_pending(self, address: str) -> bool:
        return address in self._pending

    def forget(self, address: str) -> None:
        """``address`` was unwatched: do not restore it."""
        self._pending.pop(address, None)
        if not self._listed:
            self._unwatched.add(address)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- the reads ----------------------------------------------------------------------
    async def read_list(self, watched: Container[str]) -> None:
        """Read the watch list: every address not ``watched`` already (watched since the
        start, so with fresh state) nor unwatched meanwhile becomes pending."""
        addresses = await self._store.watch_list()
        self._pending = dict.fromkeys(a for a in addresses
                                      if a not in watched and a not in self._unwatched)
        self._listed = True
        self._unwatched.clear()

    async def next_page(self) -> RestoredPage | None:
        """The next page's stored state (None: all restored). Its addresses stay pending
        until ``take``: one unwatched during the reads is not handed over."""
        if not self._pending:
            self.done = True
            return None
        addresses = list(itertools.islice(self._pending, self._page))
        known = await self._store.known_txs_many(addresses)
        live = [a for a in addresses if any(self._may_change(h) for h in known.get(a, {}).values())]
        amounts = await self._store.logged_amounts(live) if live else {}
        return RestoredPage(addresses, known, amounts)

    def take(self, page: RestoredPage, entry_for: dict[str, WatchedAddress]) -> None:
        """Fill in the entries (``entry_for``: the fresh entry of each address of the
        page still pending) from ``page``; they are no longer pending."""
        for address in page.addresses:
            self._pending.pop(address, None)
        for address, entry in entry_for.items():
            entry.known = known = dict(page.known.get(address, {}))
            entry.confirmations = {
                txid: min(self._depth, self.tip - height + 1)
                for txid, height in known.items() if 0 < height <= self.tip
            }
            stored = page.amounts.get(address, {})
            entry.amounts = {t: stored[t] for t, h in known.items()
                             if t in stored and self._may_change(h)}
            entry.log_checked = False

    def still_pending(self, page: RestoredPage) -> list[str]:
        return [a for a in page.addresses if a in self._pending]

    def _may_change(self, height: int) -> bool:
        """Whether a known transaction may still get events in the normal course: in the
        mempool, or mined less than the depth deep (its confirmation updates)."""
        return height <= 0 or self.tip - height + 1 < self._depth
