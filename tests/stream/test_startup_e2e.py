"""Start-up with a stored watch list, on the real server over the bed and PostgreSQL.

- The restore of the watch list runs in the background: held at its bulk read (a hook on
  the store's ``known_txs_many``, not a timer), the server already answers ``/healthz``
  and a block mined meanwhile reaches an SSE client.
- A restart prices what it already knows from the store: the confirmation updates after
  the next block carry the right amounts and not one of those transactions is asked of
  Electrum (every ``get_transactions_batch`` of the pool is recorded).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from embit.networks import NETWORKS
from embit.script import Script

from batcher.store.postgres import PostgresStore
from stream.app import create_app
from stream.electrum import ServerPool
from stream.settings import Settings
from tests.batcher.conftest import fresh_pg_database, pg_url_for
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.server_process import free_port
from tests.stream.live import Live, live_server, serving
from tests.stream.test_chain_e2e import collect_sse, events_of, until

pytestmark = pytest.mark.anyio


def addresses(n: int) -> list[str]:
    """``n`` distinct regtest P2WPKH addresses nobody pays."""
    return [str(Script(b"\x00\x14" + (7_000_000 + i).to_bytes(20, "big"))
                .address(NETWORKS["regtest"])) for i in range(n)]


async def test_healthz_and_blocks_do_not_wait_for_the_watch_list_restore(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wait_for_tip()
    watch = addresses(3000)
    held, release = anyio.Event(), anyio.Event()
    bulk = PostgresStore.known_txs_many

    async def held_read(self: PostgresStore, wanted: Sequence[str]) -> dict[str, dict[str, int]]:
        held.set()
        await release.wait()
        return await bulk(self, wanted)

    monkeypatch.setattr(PostgresStore, "known_txs_many", held_read)
    async with live_server(electrumx_servers, producers=True, watch=tuple(watch)) as live, \
            httpx.AsyncClient(base_url=live.http) as http:
        producer = live.services.producers.addresses
        with anyio.fail_after(10):
            await held.wait()
        assert (await http.get("/healthz")).status_code == 200
        assert producer.stats()["restoring"] == 3000
        sse: list[dict[str, Any]] = []
        async with anyio.create_task_group() as tg:
            connected = anyio.Event()
            tg.start_soon(collect_sse, live, "?types=block", sse, connected)
            await connected.wait()
            await anyio.to_thread.run_sync(regtest_node.mine)
            height = regtest_node.height
            await until(lambda: any(b["height"] == height for b in events_of(sse, "block")),
                        seconds=10)
            tg.cancel_scope.cancel()
        assert producer.stats()["restoring"] == 3000  # still held: the block did not wait
        release.set()
        await until(lambda: _all_subscribed(live, 3000), seconds=60)
        assert producer.watching == 3000


def _all_subscribed(live: Live, n: int) -> bool:
    stats = live.services.producers.addresses.stats()
    return (stats["restoring"] == 0 and stats["to_subscribe"] == 0
            and live.services.pool.snapshot().subscriptions.scripthashes == n)


async def test_a_restart_refetches_no_transaction_it_knows_and_keeps_the_amounts(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wait_for_tip()
    node = regtest_node
    watch = [node.new_address("p2wpkh") for _ in range(12)]
    asked: list[str] = []
    fetch = ServerPool.get_transactions_batch

    async def counting(self: ServerPool, txids: Iterable[str]) -> Any:
        wanted = list(txids)
        asked.extend(wanted)
        return await fetch(self, wanted)

    monkeypatch.setattr(ServerPool, "get_transactions_batch", counting)
    async with fresh_pg_database() as name:
        config = Settings(network="regtest", servers=tuple(s.tcp_url for s in electrumx_servers),
                          database_url=pg_url_for(name), watch=tuple(watch))
        # Before: 3 transactions paying 4 addresses each, mined once (1 confirmation).
        paid = {}
        async with _server(config) as live:
            for n in range(3):
                outputs = [(a, 10_000 + 1_000 * i) for i, a in enumerate(watch[4 * n:4 * n + 4])]
                txid = await anyio.to_thread.run_sync(node.pay_many, outputs)
                paid.update({a: (txid, sats) for a, sats in outputs})
            await _events(live, watch, lambda data: data["status"] == "mempool")
            await anyio.to_thread.run_sync(node.mine)
            await _events(live, watch, lambda data: data.get("confirmations") == 1)
        known = {txid for txid, _ in paid.values()}
        assert known <= set(asked)  # fetched once, when first seen
        asked.clear()
        # After the restart: the next block's updates, priced from the store.
        async with _server(config) as live:
            await until(lambda: _all_subscribed(live, len(watch)), seconds=30)
            await anyio.to_thread.run_sync(node.mine)
            second = await _events(live, watch, lambda data: data.get("confirmations") == 2)
        assert {a: (d["txid"], d["received_sats"]) for a, d in second.items()} == paid
        assert known.isdisjoint(asked)


@asynccontextmanager
async def _server(config: Settings) -> AsyncIterator[Live]:
    """``chainwire serve``'s app on a free port, with its producers."""
    app = create_app(config, producers=True)
    port = free_port()
    async with serving(app, port):
        yield Live(app.state.services, port)


async def _events(live: Live, watch: Sequence[str], wanted: Any) -> dict[str, dict[str, Any]]:
    """The first stored ``address`` event of each watched address that is ``wanted``."""
    found: dict[str, dict[str, Any]] = {}
    with anyio.fail_after(30):
        while len(found) < len(watch):
            for address in watch:
                for event in await live.services.store.address_events(address, limit=20):
                    if wanted(event.data):
                        found[address] = dict(event.data)
            await anyio.sleep(0.1)
    return found
