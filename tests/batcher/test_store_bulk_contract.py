"""The producers' bulk reads at start-up: the same contract on both engines."""

from __future__ import annotations

import pytest

from batcher.events import Event
from batcher.store import BatchStore, NewBatch

pytestmark = pytest.mark.anyio

T0 = 1_760_000_000.0


def address_event(address: str, txid: str, received: int, sent: int, n: int,
                  **extra: object) -> Event:
    data = {"address": address, "txid": txid, "height": 0, "status": "mempool",
            "received_sats": received, "sent_sats": sent, "confirmations": 0, **extra}
    return Event(type="address", key=address, data=data, ts=T0 + n, id=f"a{n}")


async def test_known_txs_many_reads_every_listed_address_with_known_txs_at_once(
    store: BatchStore,
) -> None:
    await store.watch_add(["bc1a", "bc1b", "bc1c", "bc1d"])
    await store.set_known_txs("bc1a", {"aa": 0, "bb": 812_000})
    await store.set_known_txs("bc1b", {"cc": 811_999})
    await store.set_known_txs("bc1d", {"dd": 5})
    # Only the addresses asked for, and only those with known transactions.
    assert await store.known_txs_many(["bc1a", "bc1b", "bc1c"]) == {
        "bc1a": {"aa": 0, "bb": 812_000}, "bc1b": {"cc": 811_999}}
    assert await store.known_txs_many([]) == {}
    await store.watch_remove("bc1a")
    assert await store.known_txs_many(["bc1a", "bc1d"]) == {"bc1d": {"dd": 5}}


async def test_known_txs_many_takes_a_page_larger_than_any_parameter_limit(
    store: BatchStore,
) -> None:
    addresses = [f"bc1q{n:06d}" for n in range(40_000)]  # over SQLite's 32766 parameters
    await store.set_known_txs(addresses[-1], {"ee": 7})
    assert await store.known_txs_many(addresses) == {addresses[-1]: {"ee": 7}}


async def test_logged_amounts_are_the_latest_stored_amounts_per_address_and_txid(
    store: BatchStore,
) -> None:
    events = [
        address_event("bc1a", "t1", 0, 0, 1),  # unpriced first, priced later: the later wins
        address_event("bc1a", "t1", 5_000, 0, 2, status="confirmed", confirmations=1),
        address_event("bc1a", "t2", 0, 7_000, 3),
        address_event("bc1b", "t1", 1_000, 2_000, 4),  # the same tx, another address
        address_event("bc1c", "t9", 9, 9, 5),
    ]
    await store.save_batches([NewBatch.encoded("address", tuple(events[:2]), T0),
                              NewBatch.encoded("address", tuple(events[2:]), T0)])
    block = Event(type="block", key="1", data={"height": 1, "txid": "t1"}, ts=T0, id="b1")
    await store.save_batches([NewBatch.encoded("block", (block,), T0)])
    assert await store.logged_amounts(["bc1a", "bc1b", "bc1x"]) == {
        "bc1a": {"t1": (5_000, 0), "t2": (0, 7_000)},
        "bc1b": {"t1": (1_000, 2_000)},
    }
    assert await store.logged_amounts([]) == {}
