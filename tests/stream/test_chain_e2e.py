"""The whole path with real chain events: regtest node -> ElectrumX -> producers ->
batcher -> PostgreSQL -> hub -> a WebSocket bot and an EventSource-style SSE client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.stream.live import Live, live_server
from tests.stream.test_streaming_e2e import ws_subscribe

pytestmark = pytest.mark.anyio


async def collect_ws(bot: ClientConnection, into: list[dict[str, Any]]) -> None:
    async for raw in bot:
        message = orjson.loads(raw)
        if message["op"] == "batch":
            into.append(message)


async def collect_sse(live: Live, query: str, into: list[dict[str, Any]],
                      connected: anyio.Event) -> None:
    async with httpx.AsyncClient(timeout=30) as client, client.stream(
        "GET", f"{live.http}/events{query}"
    ) as response:
        assert response.status_code == 200
        connected.set()
        data, event = "", ""
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data = line.removeprefix("data:").strip()
            elif line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line == "":
                if data and event != "start":  # the stream's position, not a batch
                    into.append(orjson.loads(data))
                data, event = "", ""


def events_of(batches: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e["data"] for b in batches if b["type"] == event_type for e in b["events"]]


async def until(predicate: Callable[[], bool], seconds: float = 20) -> None:
    with anyio.fail_after(seconds):
        while not predicate():
            await anyio.sleep(0.05)


async def test_payments_and_a_block_reach_a_bot_and_a_dashboard_as_the_same_batches(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
) -> None:
    wait_for_tip()
    node = regtest_node
    address = node.new_address("p2wpkh")
    async with live_server(electrumx_servers, producers=True) as live:
        ws: list[dict[str, Any]] = []
        sse: list[dict[str, Any]] = []
        async with connect(live.ws) as bot, anyio.create_task_group() as tg:
            # Subscribing to an address starts watching it.
            await ws_subscribe(bot, types=["address", "block"], addresses=[address])
            tg.start_soon(collect_ws, bot, ws)
            connected = anyio.Event()
            # From the start of the store: the SSE client then has every batch the bot got,
            # however the two connections' start-up raced the first block event.
            tg.start_soon(collect_sse, live,
                          f"?types=address,block&address={address}&last_event_id=0", sse,
                          connected)
            await connected.wait()
            txids = [await anyio.to_thread.run_sync(node.pay, address, sats)
                     for sats in (21_000, 22_000, 23_000)]
            await until(lambda: len(events_of(ws, "address")) >= 3)
            await anyio.to_thread.run_sync(node.mine)
            height = node.height
            await until(lambda: len(events_of(ws, "address")) >= 6
                        and any(b["height"] == height for b in events_of(ws, "block")))
            await until(lambda: {b["seq"] for b in sse} >= {b["seq"] for b in ws})
            tg.cancel_scope.cancel()
        assert address in await live.services.store.watch_list()

    address_events = events_of(ws, "address")
    assert sorted((e["txid"], e["status"], e["received_sats"]) for e in address_events[:3]) == \
        sorted((t, "mempool", s) for t, s in zip(txids, (21_000, 22_000, 23_000), strict=True))
    assert sorted((e["txid"], e["status"], e["height"]) for e in address_events[3:]) == sorted(
        (t, "confirmed", height) for t in txids)
    [block] = [b for b in events_of(ws, "block") if b["height"] == height]
    assert block["hash"] == node.tip_hash
    # The block reached the store before the confirmations it caused.
    block_seq = next(b["seq"] for b in ws if b["type"] == "block"
                     and b["events"][0]["data"]["height"] == height)
    assert all(b["seq"] > block_seq for b in ws if b["type"] == "address"
               and b["events"][0]["data"]["status"] == "confirmed")
    # The bot and the dashboard got the very same batches.
    by_seq = {b["seq"]: b for b in sse}
    for batch in ws:
        assert by_seq[batch["seq"]] == {k: v for k, v in batch.items() if k != "op"}
