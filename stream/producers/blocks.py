"""The block producer: the one source of chain truth.

It follows the tip on ``header_servers`` Electrum servers and checks every header with
:class:`~stream.producers.headers.HeaderChain` (proof of work, links, most work wins)
before anything becomes an event. One change of the best chain gives, in one ``emit``:

* ``Extended``: a ``block`` event per new block (key = height), lowest first;
* ``Reorg``: a ``reorg`` event (key = the new tip's height), then a ``block`` event per
  connected block.

Then the tip is stored (``store.set_tip``) and each listener's ``on_chain`` is called. The
first server to report a block wins; the same block from another server is a
``Duplicate``: one event per block.

A server that sends a header that cannot be true (unparseable, insufficient proof of work,
a run that does not link, a fork below the window) or that cannot supply the ancestors of
the tip it reported is banned from the pool (``ServerPool.ban``) and never produces an
event; the others carry on.

Restart: the window is seeded from the stored tip and the stored ``block`` events (walking
back from the tip by ``prev_hash``, so blocks of an orphaned branch are left out), then
deepened to ``max_depth`` blocks from the first server seen (headers accepted only if
they hash-link to a stored block). The missed blocks are then fetched as ancestors of the
server's tip and emitted in order. A gap of more than ``max_catch_up`` blocks is not
replayed: the producer starts over from the server's tip as on a first start (one
``block`` event for the tip, a window of its recent headers) and logs what it skipped.
With nothing stored, the first tip seen is emitted as one ``block`` event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus

from batcher.events import Event
from batcher.store import ProducerState, StoreError
from stream.electrum import (
    HeaderNotification,
    HeadersMoved,
    NoServerAvailable,
    Overflowed,
    RetryableError,
    ServerError,
    ServerPool,
)

from .base import ChainChange, ChainListener, EventSink, make_event
from .block_runs import linked_run, parse_headers_result, seed_window
from .headers import (
    DEFAULT_MAX_DEPTH,
    BlockHeader,
    ChainUpdate,
    Duplicate,
    Extended,
    HeaderChain,
    KnownBlock,
    NeedAncestors,
    Rejected,
    Reorg,
    Stale,
    Tip,
    block_event_data,
    reorg_event_data,
)

__all__ = [
    "BAN_SECONDS",
    "DEFAULT_MAX_CATCH_UP",
    "BlockProducer",
    "parse_headers_result",
    "seed_window",
]

logger = logging.getLogger(__name__)

BLOCK_HEADERS = "blockchain.block.headers"
BAN_SECONDS = 3600.0
#: Blocks replayed after a restart at most (two weeks of mainnet blocks, beyond the
#: default retention); a longer gap starts over from the server's tip.
DEFAULT_MAX_CATCH_UP = 2016
# NeedAncestors is asked at most twice for a chain that holds still (see headers.py); a
# third round means the server's answers keep contradicting its tip.
_MAX_ROUNDS = 3
_RETRY_MIN, _RETRY_MAX = 1.0, 30.0


class _Untrusted(Exception):
    """What a server sent cannot be true: ban it."""


class BlockProducer:
    """Turns the checked tip of the Electrum servers into ``block`` and ``reorg`` events.

    ``run()`` until cancelled; ``tip`` is the best chain's tip (None before the first).
    """

    def __init__(
        self,
        pool: ServerPool,
        store: ProducerState,
        sink: EventSink,
        *,
        network: str,
        listeners: Sequence[ChainListener] = (),
        header_servers: int = 2,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_catch_up: int = DEFAULT_MAX_CATCH_UP,
        ban_seconds: float = BAN_SECONDS,
    ) -> None:
        if header_servers < 1:
            raise ValueError(f"header_servers must be >= 1, got {header_servers}")
        if max_catch_up < 1:
            raise ValueError(f"max_catch_up must be >= 1, got {max_catch_up}")
        self._pool = pool
        self._store = store
        self._sink = sink
        self._network = network
        self._listeners = tuple(listeners)
        self._header_servers = header_servers
        self._max_depth = max_depth
        self._max_catch_up = max_catch_up
        self._ban_seconds = ban_seconds
        self._chain = self._new_chain()
        # A stored tip whose block event is gone: resolved with the first server's headers.
        self._anchor: Tip | None = None
        # Whether the stored window still needs deepening from a server.
        self._shallow = False
        # Servers banned here, until when (anyio time): their buffered notes are dropped.
        self._banned: dict[str, float] = {}
        # The last height handled per server (stats, and what tests wait on).
        self._handled: dict[str, int] = {}
        self._counts = {"blocks": 0, "reorgs": 0, "duplicates": 0, "stale": 0, "bans": 0}

    @property
    def tip(self) -> Tip | None:
        """The best chain's tip, or None before the first header (or stored tip)."""
        return self._chain.tip

    def stats(self) -> dict[str, Any]:
        """Plain figures: the tip, what was emitted, and each server's last handled tip."""
        tip = self._chain.tip
        return {
            "tip_height": None if tip is None else tip.height,
            "tip_hash": None if tip is None else tip.hash,
            **self._counts,
            "servers": dict(self._handled),
        }

    def _new_chain(self, known: Iterable[KnownBlock] = ()) -> HeaderChain:
        return HeaderChain.for_network(self._network, known, max_depth=self._max_depth)

    # -- running -----------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Seed from the store, report started (no Electrum connection is waited for before
        that), then follow the tip until cancelled or the pool closes."""
        await self._seed()
        task_status.started()
        delay = _RETRY_MIN
        while True:
            try:
                async with self._pool.subscribe_headers(servers=self._header_servers) as hs:
                    delay = _RETRY_MIN
                    for note in list(hs.current.values()):
                        await self._on_tip(note.server, note.height, note.header)
                    async for item in hs:
                        if isinstance(item, HeaderNotification):
                            await self._on_tip(item.server, item.height, item.header)
                        elif isinstance(item, HeadersMoved):
                            await self._on_tip(item.new_server, item.height, item.header)
                        elif isinstance(item, Overflowed):
                            # Dropped notes: each server's latest tip covers them.
                            for note in list(hs.current.values()):
                                await self._on_tip(note.server, note.height, note.header)
                return  # the iteration ends only when the pool closes
            except NoServerAvailable as exc:
                logger.warning(
                    "block producer: no Electrum server for headers (%s); retrying in %.0fs",
                    exc, delay,
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _seed(self) -> None:
        stored = await self._store.get_tip()
        events = await self._store.recent_blocks(limit=2 * (self._max_depth + 1))
        window, self._anchor = seed_window(stored, events, self._max_depth)
        self._chain = self._new_chain(window)
        self._shallow = bool(window) and len(window) <= self._max_depth and window[0].height > 0
        tip = self._chain.tip
        if tip is not None:
            logger.info(
                "block producer: resuming at height %d (%s), %d stored block(s)",
                tip.height, tip.hash, len(window),
            )
        elif self._anchor is not None:
            logger.info(
                "block producer: stored tip %d (%s) has no stored block event; "
                "asking a server for its headers", self._anchor.height, self._anchor.hash,
            )

    # -- one reported tip --------------------------------------------------------------
    async def _on_tip(self, server: str, height: int, header_hex: str) -> None:
        if self._banned.get(server, float("-inf")) > anyio.current_time():
            return  # buffered before its ban
        try:
            try:
                header = BlockHeader.parse(header_hex)
            except (TypeError, ValueError) as exc:
                raise _Untrusted(f"unparseable header at height {height}: {exc}") from None
            update = await self._resolve(server, height, header)
        except _Untrusted as exc:
            self._ban(server, str(exc))
            return
        except RetryableError as exc:
            # Gone or slow while we asked it for headers: its next tip (or its replacement's)
            # brings us back here.
            logger.info("block producer: no headers from %s (%s)", server, exc)
            return
        self._handled[server] = height
        await self._apply(update)

    async def _resolve(self, server: str, height: int, header: BlockHeader) -> ChainUpdate:
        """What ``header`` at ``height`` does to the chain, after fetching what it needs
        from ``server``. ``_Untrusted`` if the server's headers cannot be true."""
        if self._anchor is not None:
            if height < self._anchor.height:
                return Stale(f"{server} is behind the stored tip")
            await self._resolve_anchor(server)
        elif self._shallow and self._chain.tip is not None and height >= self._chain.tip.height:
            await self._deepen(server)
        if self._chain.tip is None:
            return await self._adopt(server, height, header)
        tip = self._chain.tip
        update = self._chain.accept(height, header)
        rounds = 0
        while isinstance(update, NeedAncestors):
            if height - tip.height > self._max_catch_up:
                logger.warning(
                    "block producer: %s is at height %d, %d blocks past our tip %d: more "
                    "than max_catch_up (%d), so those blocks get no events; starting over "
                    "from its tip", server, height, height - tip.height, tip.height,
                    self._max_catch_up,
                )
                return await self._adopt(server, height, header)
            rounds += 1
            if rounds > _MAX_ROUNDS:
                raise _Untrusted(f"cannot supply the ancestors of its tip at height {height}")
            run = await self._fetch(server, update.start, height - update.start + 1)
            if not run:
                raise _Untrusted(
                    f"has no headers from height {update.start} below its tip at {height}"
                )
            update = self._chain.accept_many(update.start, run)
        if isinstance(update, Rejected):
            raise _Untrusted(update.reason)
        return update

    async def _adopt(self, server: str, height: int, header: BlockHeader) -> ChainUpdate:
        """Start from ``server``'s tip (first start, or a gap too long to replay): a window
        of its recent headers, and one ``block`` event for the tip."""
        checked = self._new_chain().accept(height, header)
        if isinstance(checked, Rejected):
            raise _Untrusted(checked.reason)
        start = max(0, height - self._max_depth)
        run = await self._fetch(server, start, height - start + 1)
        if not run:
            raise _Untrusted(f"has no headers below its tip at height {height}")
        chain = self._new_chain()
        update = chain.accept_many(start, run)
        if isinstance(update, Rejected):
            raise _Untrusted(update.reason)
        assert isinstance(update, Extended)  # an empty chain adopts a valid run
        self._chain, self._anchor, self._shallow = chain, None, False
        return Extended(update.blocks[-1:])

    async def _resolve_anchor(self, server: str) -> None:
        """Rebuild the window below a stored tip that has no stored event, from headers
        that hash-link up to it; if the server's chain does not hold that tip, start over
        from the server's tip (we cannot tell where it forked)."""
        anchor = self._anchor
        assert anchor is not None
        start = max(0, anchor.height - self._max_depth)
        run = await self._fetch(server, start, anchor.height - start + 1)
        window = linked_run(start, run)
        if window and window[-1].height == anchor.height and window[-1].hash == anchor.hash:
            self._chain = self._new_chain(window)
            logger.info("block producer: resuming at stored tip %d from %s's headers",
                        anchor.height, server)
        else:
            logger.warning(
                "block producer: stored tip %d (%s) is not on %s's chain and its block "
                "events are gone: starting over from the server's tip",
                anchor.height, anchor.hash, server,
            )
        self._anchor = None

    async def _deepen(self, server: str) -> None:
        """Fill the window below the stored blocks with ``server``'s headers, kept only if
        they hash-link to the lowest stored block (so they need no other check)."""
        known = list(self._chain.known_blocks())
        lowest = known[0]
        start = max(0, known[-1].height - self._max_depth)
        if start >= lowest.height:
            self._shallow = False
            return
        # Done once, unless the server goes away meanwhile (RetryableError: ask the next).
        try:
            run = await self._fetch(server, start, lowest.height - start)
        except _Untrusted:
            self._shallow = False
            raise
        self._shallow = False
        below = linked_run(start, run)
        try:
            self._chain = self._new_chain([*below, *known])
        except ValueError:
            logger.info("block producer: %s's headers below height %d do not link to the "
                        "stored blocks; keeping the stored window", server, lowest.height)

    async def _fetch(self, server: str, start: int, count: int) -> list[BlockHeader]:
        """Up to ``count`` headers from ``start``, from ``server`` only (it claimed them);
        fewer if its chain is shorter. Several requests if it caps an answer."""
        headers: list[BlockHeader] = []
        while count > 0:
            try:
                result = await self._pool.request_on(server, BLOCK_HEADERS, start, count)
            except ServerError as exc:
                raise _Untrusted(f"cannot supply headers from height {start}: {exc}") from None
            try:
                got = parse_headers_result(result)
            except (TypeError, ValueError) as exc:
                raise _Untrusted(f"bad {BLOCK_HEADERS} answer: {exc}") from None
            if len(got) > count:
                raise _Untrusted(f"sent {len(got)} headers for {count} asked")
            if not got:
                break
            headers.extend(got)
            start += len(got)
            count -= len(got)
        return headers

    def _ban(self, server: str, reason: str) -> None:
        self._counts["bans"] += 1
        self._banned[server] = anyio.current_time() + self._ban_seconds
        try:  # the pool logs the ban and its reason at WARNING
            self._pool.ban(server, reason, self._ban_seconds)
        except ValueError:  # not one of the pool's servers (cannot happen for a note)
            logger.warning("block producer: distrusting %s (not in the pool): %s",
                           server, reason)

    # -- events ------------------------------------------------------------------------
    async def _apply(self, update: ChainUpdate) -> None:
        if isinstance(update, Duplicate):
            self._counts["duplicates"] += 1
            return
        if isinstance(update, Stale):
            self._counts["stale"] += 1
            logger.debug("block producer: stale headers: %s", update.reason)
            return
        assert isinstance(update, Extended | Reorg)
        change: ChainChange = update
        events: list[Event] = []
        if isinstance(change, Reorg):
            events.append(make_event("reorg", change.new_tip.height, reorg_event_data(change)))
            blocks = change.connected
            self._counts["reorgs"] += 1
            logger.info(
                "reorg after height %d: %d block(s) off, %d on, tip %d %s",
                change.fork_height, len(change.disconnected), len(blocks),
                change.new_tip.height, change.new_tip.hash,
            )
        else:
            blocks = change.blocks
        events.extend(
            make_event("block", b.height, block_event_data(b.height, b.header)) for b in blocks
        )
        self._counts["blocks"] += len(blocks)
        await self._sink.emit(events)
        tip = blocks[-1]
        try:
            await self._store.set_tip(tip.height, tip.hash)
        except StoreError as exc:
            # Only a resume hint: the next block records it again.
            logger.warning("block producer: cannot record tip %d: %s", tip.height, exc)
        for listener in self._listeners:
            try:
                listener.on_chain(change)
            except Exception:  # one broken listener must not stop blocks
                logger.exception("block producer: listener %r failed", listener)
