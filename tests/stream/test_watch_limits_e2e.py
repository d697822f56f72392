"""The watch list is bounded: a global cap, per-client budgets, leases, pages, keys.

A real server on a real port over PostgreSQL, driven by real HTTP, SSE and WebSocket
clients the way an attacker or an operator would. Leases that must run out on cue use the
test's own lease clock (``lease_clock``) and the keeper's own step (``expire_due``); the
one test on the real clock only waits for what must happen.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import orjson
import pytest
from embit import bech32
from websockets.asyncio.client import ClientConnection, connect

from stream.app import create_app
from stream.services import Limits
from stream.settings import Settings
from tests.batcher.conftest import fresh_pg_database, pg_url_for
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.server_process import free_port
from tests.stream.live import Live, live_server, serving
from tests.stream.test_streaming_e2e import ws_subscribe

pytestmark = pytest.mark.anyio


def addr(n: int) -> str:
    """A distinct valid regtest P2WPKH address per ``n``."""
    return str(bech32.encode("bcrt", 0, n.to_bytes(20, "big")))


class Clock:
    """The lease clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def watched(http: httpx.AsyncClient) -> list[str]:
    body = (await http.get("/api/v1/watch", params={"limit": 10_000})).json()
    return list(body["addresses"])


async def ws_send(bot: ClientConnection, **message: Any) -> dict[str, Any]:
    await bot.send(orjson.dumps(message).decode())
    return dict(orjson.loads(await bot.recv()))


@asynccontextmanager
async def sse_open(live: Live, query: str) -> AsyncIterator[httpx.Response]:
    """An SSE stream held open until the block ends, after its first line (the server
    writes it once the stream holds its addresses and is subscribed)."""
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "GET", f"{live.http}/events{query}"
    ) as response:
        assert response.status_code == 200
        # Kept referenced: a line iterator left to the garbage collector closes the stream.
        lines = response.aiter_lines()
        with anyio.fail_after(10):
            await anext(lines)
        yield response
        assert live.services.hub.stats()["clients"].get("sse"), "the stream was still open"


async def until_expiring(http: httpx.AsyncClient, count: int) -> None:
    """Until ``count`` leases are running (their last subscriber has left)."""
    with anyio.fail_after(10):
        while (await http.get("/api/v1/stats")).json()["watch"]["expiring"] != count:
            await anyio.sleep(0.02)


async def test_past_the_global_cap_no_kind_of_watch_adds_anything(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, max_watched=3) as live, \
            httpx.AsyncClient(base_url=live.http) as http:
        assert (await http.post("/api/v1/watch", json={"addresses": [addr(1), addr(2)]})
                ).json() == {"added": [addr(1), addr(2)], "watching": 2}
        # Two more would make 4: refused whole, over HTTP, SSE and WS alike.
        over = await http.post("/api/v1/watch", json={"addresses": [addr(3), addr(4)]})
        assert over.status_code == 409
        assert over.json()["error"]["code"] == "watch_limit"
        assert "3" in over.json()["error"]["message"]
        sse = await http.get("/events", params=[("address", addr(3)), ("address", addr(4))])
        assert sse.status_code == 409 and sse.json()["error"]["code"] == "watch_limit"
        async with connect(live.ws) as bot:
            await ws_subscribe(bot, types=["block"])
            error = await ws_send(bot, op="subscribe", addresses=[addr(3), addr(4)])
            assert error["op"] == "error" and error["code"] == "watch_limit", error
            assert await ws_send(bot, op="ping") == {"op": "pong"}  # the connection stays
            assert sorted(await watched(http)) == sorted([addr(1), addr(2)])
            # Already-watched addresses cost nothing at the cap; one more still fits.
            ok = await ws_send(bot, op="subscribe", addresses=[addr(1), addr(3)])
            assert ok["op"] == "subscribed" and ok["addresses"] == sorted([addr(1), addr(3)])
        full = await http.post("/api/v1/watch", json={"addresses": [addr(1), addr(5)]})
        assert full.status_code == 409
        again = await http.post("/api/v1/watch", json={"addresses": [addr(1), addr(2)]})
        assert again.json() == {"added": [], "watching": 3}
        assert (await http.get("/api/v1/watch")).json()["total"] == 3


async def test_churn_cannot_take_a_connection_past_its_address_budget(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    limits = Limits(ws_max_addresses=3, sse_max_addresses=2)
    async with live_server(electrumx_servers, limits) as live, \
            httpx.AsyncClient(base_url=live.http) as http:
        async with connect(live.ws) as bot:
            await ws_subscribe(bot, addresses=[addr(1), addr(2), addr(3)])
            assert (await ws_send(bot, op="unsubscribe",
                                  addresses=[addr(1), addr(2), addr(3)]))["addresses"] == []
            # Subscribed to none now, but it has had 3 watched: a 4th is refused...
            error = await ws_send(bot, op="subscribe", addresses=[addr(4)])
            assert error["code"] == "limit_exceeded", error
            # ...while any of the 3 it already named may come back.
            back = await ws_send(bot, op="subscribe", addresses=[addr(2)])
            assert back["op"] == "subscribed" and back["addresses"] == [addr(2)]
        assert sorted(await watched(http)) == sorted([addr(1), addr(2), addr(3)])
        # SSE: one URL may name at most sse_max_addresses (repeated or comma-separated).
        for query in (f"address={addr(5)}&address={addr(6)},{addr(7)}",
                      "address=" + ",".join(addr(n) for n in range(5, 8))):
            bad = await http.get(f"/events?{query}")
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "limit_exceeded"
            assert "2" in bad.json()["error"]["message"]
        assert len(await watched(http)) == 3  # none of those was watched


async def test_a_lease_ends_after_the_last_subscriber_left_on_the_real_clock(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, watch_lease_seconds=0.5) as live, \
            httpx.AsyncClient(base_url=live.http) as http:
        async with connect(live.ws) as bot, sse_open(live, f"?address={addr(2)}"):
            await ws_subscribe(bot, addresses=[addr(1)])
            assert sorted(await watched(http)) == sorted([addr(1), addr(2)])
            await anyio.sleep(1.5)  # three lease lengths: held, so nothing ends
            assert sorted(await watched(http)) == sorted([addr(1), addr(2)])
            assert live.services.producers.addresses.watching == 2
        # Both gone: the keeper lets them go by itself, through the producers too.
        with anyio.fail_after(10):
            while await watched(http):
                await anyio.sleep(0.05)
        assert live.services.producers.addresses.watching == 0
        assert (await http.get("/api/v1/stats")).json()["watch"]["expired"] == 2


async def test_a_reconnect_within_the_lease_keeps_the_address_with_no_gap(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    clock = Clock()
    async with live_server(electrumx_servers, lease_clock=clock) as live, \
            httpx.AsyncClient(base_url=live.http) as http:
        keeper, store = live.services.watching, live.services.store
        async with connect(live.ws) as bot:
            await ws_subscribe(bot, addresses=[addr(1)])
        await store.set_known_txs(addr(1), {"aa" * 32: 0})  # what the producer has sent
        await until_expiring(http, 1)
        clock.now += 599  # the default lease is 600 s
        assert await keeper.expire_due() == []
        # The client comes back (WS, then SSE too) before the lease ran out.
        async with connect(live.ws) as bot:
            await ws_subscribe(bot, addresses=[addr(1)])
            async with sse_open(live, f"?address={addr(1)}"):
                clock.now += 10_000
                assert await keeper.expire_due() == []
            clock.now += 10_000  # the SSE client left, the bot still holds it
            assert await keeper.expire_due() == []
        assert await watched(http) == [addr(1)]
        # Never unwatched meanwhile: its known transactions (nothing re-sent) are kept.
        assert await store.known_txs(addr(1)) == {"aa" * 32: 0}
        await until_expiring(http, 1)
        clock.now += 600
        assert await keeper.expire_due() == [addr(1)]
        assert await watched(http) == []
        assert await store.known_txs(addr(1)) == {}


async def test_an_api_watch_makes_an_address_permanent_until_delete(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    clock = Clock()
    async with live_server(electrumx_servers, lease_clock=clock, watch=(addr(9),)) as live, \
            httpx.AsyncClient(base_url=live.http) as http:
        keeper = live.services.watching
        async with sse_open(live, f"?address={addr(1)}&address={addr(2)}"):
            # addr(1) was leased by the stream; the API pins it. addr(3): the API only.
            await http.post("/api/v1/watch", json={"addresses": [addr(1), addr(3)]})
        await until_expiring(http, 1)  # only addr(2) is on a lease
        clock.now += 1e9
        assert await keeper.expire_due() == [addr(2)]
        assert sorted(await watched(http)) == sorted([addr(1), addr(3), addr(9)])
        # DELETE ends it; a stream asking again leases it anew.
        assert (await http.delete(f"/api/v1/watch/{addr(1)}")).status_code == 200
        assert (await http.delete(f"/api/v1/watch/{addr(1)}")).status_code == 404
        async with connect(live.ws) as bot:
            await ws_subscribe(bot, addresses=[addr(1)])
        await until_expiring(http, 1)
        clock.now += 600
        assert await keeper.expire_due() == [addr(1)]
        assert sorted(await watched(http)) == sorted([addr(3), addr(9)])


async def test_pages_walk_2500_addresses_exactly_once(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    addresses = [addr(n) for n in range(2500)]
    async with live_server(electrumx_servers) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=30) as http:
        assert (await http.post("/api/v1/watch", json={"addresses": addresses})
                ).json()["watching"] == 2500
        default = (await http.get("/api/v1/watch")).json()
        assert len(default["addresses"]) == 1000 and default["total"] == 2500
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 999}
        pages = 0
        while True:
            page = (await http.get("/api/v1/watch", params=params)).json()
            pages += 1
            assert page["total"] == 2500
            seen += page["addresses"]
            if page["next"] is None:
                break
            assert page["next"] == page["addresses"][-1]
            params["after"] = page["next"]
        assert pages == 3 and seen == sorted(addresses)
        last = (await http.get("/api/v1/watch", params={"limit": 2500})).json()
        assert last["next"] is None and len(last["addresses"]) == 2500  # no empty last page
        for bad in ({"limit": 0}, {"limit": 10_001}, {"limit": "x"}, {"after": "b" * 129}):
            answer = await http.get("/api/v1/watch", params=bad)
            assert answer.status_code == 400, bad
            assert answer.json()["error"]["code"] == "bad_request"


async def test_with_keys_changing_the_watch_list_needs_one(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, api_keys=("k3y",)) as live, \
            httpx.AsyncClient(base_url=live.http) as http:
        body = {"addresses": [addr(1)]}
        assert (await http.post("/api/v1/watch", json=body)).status_code == 401
        assert (await http.get("/events", params={"address": addr(1)})).status_code == 401
        with pytest.raises(Exception, match="401"):
            async with connect(live.ws):
                pass
        assert await live.services.store.watch_list() == []
        key = {"Authorization": "Bearer k3y"}
        assert (await http.post("/api/v1/watch", json=body, headers=key)).status_code == 200
        assert (await http.delete(f"/api/v1/watch/{addr(1)}")).status_code == 401
        assert await live.services.store.watch_list() == [addr(1)]
        assert (await http.delete(f"/api/v1/watch/{addr(1)}", headers=key)).status_code == 200
        async with connect(f"{live.ws}?key=k3y") as bot:
            await ws_subscribe(bot, addresses=[addr(2)])
        assert await live.services.store.watch_list() == [addr(2)]


@pytest.mark.parametrize(("settings", "warned"), [
    ({"host": "0.0.0.0"}, True),
    ({"host": "0.0.0.0", "api_keys": ("k",)}, False),
    ({"host": "127.0.0.1"}, False),
    ({"host": "::1"}, False),
])
async def test_an_open_watch_list_on_the_network_is_one_warning_at_start(
    electrumx_servers: list[ElectrumXServer], caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any], warned: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="stream.services")
    async with live_server(electrumx_servers, **settings):
        pass
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "stream.services" and r.levelno == logging.WARNING]
    if warned:
        [line] = warnings
        assert "anyone" in line and "watch list" in line and "CHAINWIRE_API_KEYS" in line
    else:
        assert warnings == []
    assert any("CHAINWIRE_MAX_WATCHED=100000" in r.getMessage() or "at most 100000" in
               r.getMessage() for r in caplog.records)


async def test_an_expired_lease_unsubscribes_the_address_from_electrum(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
) -> None:
    wait_for_tip()
    address = regtest_node.new_address("p2wpkh")
    async with live_server(electrumx_servers, producers=True,
                           watch_lease_seconds=0.5) as live, \
            httpx.AsyncClient(base_url=live.http) as http:
        pool = live.services.pool
        async with connect(live.ws) as bot:
            await ws_subscribe(bot, types=["address"], addresses=[address])
            txid = await anyio.to_thread.run_sync(regtest_node.pay, address, 30_000)
            with anyio.fail_after(20):  # followed on the chain while the bot holds it
                while True:
                    message = orjson.loads(await bot.recv())
                    if message["op"] == "batch":
                        break
            assert message["events"][0]["data"]["txid"] == txid
            assert pool.snapshot().subscriptions.scripthashes == 1
        # The bot left: after the lease the address is unwatched, and so unsubscribed.
        with anyio.fail_after(20):
            while await watched(http) or pool.snapshot().subscriptions.scripthashes:
                await anyio.sleep(0.05)
        assert live.services.producers.addresses.watching == 0
        assert await live.services.store.known_txs(address) == {}


async def test_after_a_restart_leased_addresses_get_a_fresh_lease_and_the_rest_stay(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with fresh_pg_database() as name:
        config = Settings(network="regtest", servers=(electrumx_servers[0].tcp_url,),
                          database_url=pg_url_for(name))
        port = free_port()
        app = create_app(config, producers=False)
        async with serving(app, port):
            async with connect(f"ws://127.0.0.1:{port}/ws") as bot:
                await ws_subscribe(bot, addresses=[addr(1)])
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    await http.post("/api/v1/watch", json={"addresses": [addr(2)]})
        clock = Clock()
        app = create_app(config, producers=False, lease_clock=clock)
        async with serving(app, port), \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            stats = (await http.get("/api/v1/stats")).json()["watch"]
            assert (stats["leased"], stats["expiring"]) == (1, 1)  # addr(1), from now
            keeper = app.state.services.watching
            clock.now += 599
            assert await keeper.expire_due() == []
            clock.now += 1
            assert await keeper.expire_due() == [addr(1)]
            assert await watched(http) == [addr(2)]
