"""Chainwire itself stopped and started again while payments arrive: every event once.

A real ``chainwire serve`` process over real PostgreSQL, following the real bed."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.batcher.conftest import fresh_pg_database, pg_url_for
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.server_process import ChainwireProcess


def address_events(server: ChainwireProcess, address: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/api/v1/address/{address}/events?limit=500", timeout=5)
    assert answer.status_code == 200, answer.text
    return [e["data"] for e in answer.json()["events"]]


def wait_for(server: ChainwireProcess, address: str, count: int, seconds: float = 30
             ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        events = address_events(server, address)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_restart_while_payments_arrive_emits_every_event_once(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    tmp_path: Path,
) -> None:
    wait_for_tip()
    node = regtest_node
    address = node.new_address("p2pkh")
    # Paid last: its event is stored after every round before it, so once it is there,
    # whatever those rounds would send about `address` is there too.
    sentinel = node.new_address("p2wpkh")

    async def run() -> None:
        async with fresh_pg_database() as name:
            await anyio.to_thread.run_sync(scenario, pg_url_for(name))

    def scenario(database_url: str) -> None:
        env = {
            "CHAINWIRE_NETWORK": "regtest",
            "CHAINWIRE_SERVERS": ",".join(s.tcp_url for s in electrumx_servers),
            "CHAINWIRE_DATABASE_URL": database_url,
            "CHAINWIRE_WATCH": f"{address},{sentinel}",
            "CHAINWIRE_WINDOW_MS": "300",
        }
        txids = []
        with ChainwireProcess(env, cwd=tmp_path) as server:
            txids += [node.pay(address, 1_000 + i) for i in range(2)]
            assert len(wait_for(server, address, 2)) == 2
            txids.append(node.pay(address, 1_100))  # arrives while it stops
            assert server.stop(signal.SIGTERM) == 0
        txids += [node.pay(address, 1_200 + i) for i in range(2)]  # while it is down
        with ChainwireProcess(env, cwd=tmp_path) as server:
            txids.append(node.pay(address, 1_300))  # while it starts
            wait_for(server, address, 6)
            node.mine()
            events = wait_for(server, address, 12)
            node.pay(sentinel, 1_400)  # nothing more may come before its event
            assert len(wait_for(server, sentinel, 1)) == 1
            events = address_events(server, address)
        counts = Counter((e["txid"], e["status"]) for e in events)
        assert set(counts) == {(t, s) for t in txids for s in ("mempool", "confirmed")}
        assert set(counts.values()) == {1}, counts

    anyio.run(run)
