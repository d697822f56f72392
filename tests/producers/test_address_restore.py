"""The address producer's start-up with a stored watch list: started at once, the list
restored in bulk in the background, and what a restart already knows not fetched again.

Over a ``ScriptedPool`` (it records every transaction request) and a real SQLite store;
the restore is held at its bulk read by a hook, never by timing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from batcher.events import Event
from batcher.store import StoreError
from tests.producers.scripted import (
    ME,
    OTHER,
    extended,
    regtest_address,
)
from tests.producers.test_address_rounds import (
    FUNDING_ID,
    SPEND_ID,
    Run,
    history,
    producing,
)

pytestmark = pytest.mark.anyio


def logged(address: str, txid: str, height: int, status: str, confirmations: int,
           received: int, sent: int) -> Event:
    """An ``address`` event as the producer stored it before the restart."""
    return Event("address", address, {"address": address, "txid": txid, "height": height,
                                      "status": status, "received_sats": received,
                                      "sent_sats": sent, "confirmations": confirmations}, 1.0)


@asynccontextmanager
async def restarted(db: Path, histories: dict[str, list[dict[str, Any]]],
                    watch: Sequence[str], *, known: Mapping[str, dict[str, int]],
                    tip: int, events: Sequence[Event] = (),
                    on_bulk: Callable[[Sequence[str]], Awaitable[None]] | None = None,
                    **options: Any) -> AsyncIterator[Run]:
    """A producer started on a store left by an earlier run: ``watch`` with ``known``
    transactions at ``tip``, ``events`` stored. ``on_bulk`` runs at each bulk read."""
    async with producing(db, histories, watch, known=known, tip=tip, logged=events,
                         on_bulk=on_bulk, **options) as run:
        run.pool.gate.set()
        yield run


async def test_after_a_restart_known_transactions_are_priced_from_the_store_not_fetched(
    tmp_path: Path,
) -> None:
    """Tip 10, depth 6: FUNDING (mined at 9) has 2 confirmations sent to ME and OTHER,
    SPEND is in the mempool. Block 11 mines SPEND: every update carries the amounts stored
    before the restart, and no transaction is asked of Electrum."""
    known = {ME: {FUNDING_ID: 9, SPEND_ID: 0}, OTHER: {FUNDING_ID: 9, SPEND_ID: 0}}
    events = [logged(ME, FUNDING_ID, 9, "confirmed", 2, 80_000, 0),
              logged(ME, SPEND_ID, 0, "mempool", 0, 50_000, 80_000),
              logged(OTHER, FUNDING_ID, 9, "confirmed", 2, 1_000, 0),
              logged(OTHER, SPEND_ID, 0, "mempool", 0, 25_000, 0)]
    before = {a: history((FUNDING_ID, 9), (SPEND_ID, 0)) for a in (ME, OTHER)}
    async with restarted(tmp_path / "s.db", before, [ME, OTHER], known=known, tip=10,
                         events=events) as run:
        await run.idle()
        assert run.sink.events == []  # nothing changed while it was down
        for address in (ME, OTHER):
            run.pool.histories[address] = history((FUNDING_ID, 9), (SPEND_ID, 11))
        run.producer.on_chain(extended(11))
        run.pool.notify(ME)
        run.pool.notify(OTHER)
        await run.idle()
        amounts = {(e.key, e.data["txid"], e.data["confirmations"]):
                   (e.data["received_sats"], e.data["sent_sats"]) for e in run.sink.events}
        asked = run.pool.asked_txs
    assert amounts == {
        (ME, FUNDING_ID, 3): (80_000, 0), (ME, SPEND_ID, 1): (50_000, 80_000),
        (OTHER, FUNDING_ID, 3): (1_000, 0), (OTHER, SPEND_ID, 1): (25_000, 0),
    }
    assert asked == []


async def test_a_transaction_the_store_has_no_amounts_for_is_still_fetched(
    tmp_path: Path,
) -> None:
    async with restarted(tmp_path / "s.db", {ME: history((FUNDING_ID, 9))}, [ME],
                         known={ME: {FUNDING_ID: 9}}, tip=10) as run:
        await run.idle()
        run.producer.on_chain(extended(11))
        await run.idle()
        assert run.sink.address(ME) == [(FUNDING_ID, "confirmed", 9, 3)]
        assert run.sink.events[0].data["received_sats"] == 80_000
        assert run.pool.asked_txs == [[FUNDING_ID]]


async def test_start_is_reported_before_the_watch_list_is_read_and_rounds_run_meanwhile(
    tmp_path: Path,
) -> None:
    """The bulk read is held: the producer has started (``run`` returned from start-up),
    counts the stored addresses as watched, and a new watch gets its events meanwhile.
    Unwatching a stored address before its page is read means it is never restored."""
    held, release = anyio.Event(), anyio.Event()
    pages: list[list[str]] = []

    async def on_bulk(addresses: Sequence[str]) -> None:
        pages.append(list(addresses))
        held.set()
        await release.wait()

    new = regtest_address(3)
    stored = [regtest_address(10 + n) for n in range(5)]
    histories = {new: history((FUNDING_ID, 0)), ME: history((FUNDING_ID, 9))}
    async with restarted(tmp_path / "s.db", histories, [ME, *stored],
                         known={ME: {FUNDING_ID: 9}}, tip=10, on_bulk=on_bulk) as run:
        with anyio.fail_after(5):
            await held.wait()
        assert run.producer.stats()["restoring"] == 6 and run.producer.watching == 6
        assert not run.producer.idle
        await run.raw.watch_add([new])
        run.producer.watch([new])
        run.producer.watch([ME])  # pending: changes nothing (its stored state is coming)
        run.producer.unwatch(stored[0])
        assert await run.raw.watch_remove(stored[0])
        with anyio.fail_after(5):
            while not run.sink.address(new):
                await anyio.sleep(0.01)
        release.set()
        await run.idle()
        assert run.producer.stats()["restoring"] == 0
        assert run.producer.watching == 6  # new, ME and four stored
        assert run.producer.carrier(stored[0]) is None
        assert run.producer.carrier(stored[1]) is not None
        # ME resumed from its stored state: FUNDING is known, so nothing is sent for it.
        assert run.sink.address(ME) == []
        assert run.sink.address(new) == [(FUNDING_ID, "mempool", 0, 0)]
    assert pages == [[ME, *stored]]  # one bulk read for the page, not one per address


async def test_a_large_watch_list_is_read_in_pages_and_subscribed_in_chunks(
    tmp_path: Path,
) -> None:
    pages: list[int] = []

    async def on_bulk(addresses: Sequence[str]) -> None:
        pages.append(len(addresses))

    watch = [f"bcrt1q{n:038d}" for n in range(2500)]
    async with restarted(tmp_path / "s.db", {}, watch, known={}, tip=10,
                         on_bulk=on_bulk, restore_page=1000) as run:
        await run.idle()
        assert run.producer.watching == 2500
        assert run.producer.stats()["to_subscribe"] == 0
        chunks = run.pool.subscribed
    assert pages == [1000, 1000, 500]
    assert sorted(a for chunk in chunks for a in chunk) == sorted(watch)
    assert max(len(chunk) for chunk in chunks) <= 1000


async def test_a_block_during_a_long_subscription_restore_gets_its_updates_before_the_end(
    tmp_path: Path,
) -> None:
    """12 chunks of addresses to subscribe after a restart; ME (first in the list) has a
    transaction one confirmation short of the depth. Block 11's update for ME is emitted
    after at most one round's worth of chunks (5), not after all 12."""
    watch = [ME, *(f"bcrt1q{n:038d}" for n in range(11_999))]
    chunks_at_emit: list[int] = []
    async with restarted(tmp_path / "s.db", {ME: history((FUNDING_ID, 9))}, watch,
                         known={ME: {FUNDING_ID: 9}}, tip=10, confirmations=3,
                         restore_page=20_000,  # all 12 chunks pending at once
                         events=[logged(ME, FUNDING_ID, 9, "confirmed", 2, 80_000, 0)]
                         ) as run:

        async def before(emit: int) -> None:
            chunks_at_emit.append(len(run.pool.subscribed))

        run.sink.before = before
        run.producer.on_chain(extended(11))
        await run.idle()
        assert run.sink.address(ME) == [(FUNDING_ID, "confirmed", 9, 3)]
        assert len(run.pool.subscribed) == 12
        assert run.pool.asked_txs == []
    assert len(chunks_at_emit) == 1 and chunks_at_emit[0] <= 5


async def test_a_store_failure_during_the_restore_is_retried_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def on_bulk(addresses: Sequence[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("scripted: the database went away")

    async with restarted(tmp_path / "s.db", {ME: history((FUNDING_ID, 9))}, [ME, OTHER],
                         known={ME: {FUNDING_ID: 9}}, tip=10, on_bulk=on_bulk) as run:
        await run.idle()
        assert run.producer.watching == 2 and run.producer.stats()["restoring"] == 0
        assert run.sink.events == []  # ME resumed from its stored state
    assert calls == 2
    assert "restoring the watch list failed" in caplog.text
