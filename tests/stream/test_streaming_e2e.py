"""SSE and WebSocket end to end: a real server on a real port, real PostgreSQL, real clients.

Events enter through the batcher's public ``submit()`` — the producers' own interface —
and travel batcher -> PostgreSQL -> hub -> transport -> client like any chain event.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from batcher.events import Event
from stream.app import create_app
from stream.services import Limits, Services
from stream.settings import Settings
from tests.batcher.conftest import fresh_pg_database, pg_url_for
from tests.bed.electrumx import ElectrumXServer
from tests.server_process import free_port
from tests.stream.live import Live, live_server, serving

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
OTHER_ADDRESS = "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry"


def address_event(n: int, address: str = ADDRESS) -> Event:
    return Event("address", address, {"address": address, "txid": f"{n:064x}", "height": 0,
                                      "status": "mempool", "received_sats": 1000 + n,
                                      "sent_sats": 0, "confirmations": 0}, ts=time.time())


def block_event(height: int) -> Event:
    return Event("block", str(height), {"height": height, "hash": f"{height:064x}"},
                 ts=time.time())


async def ws_subscribe(client: ClientConnection, **subscription: Any) -> dict[str, Any]:
    hello = orjson.loads(await client.recv())
    assert hello["op"] == "hello"
    await client.send(orjson.dumps({"op": "subscribe", **subscription}).decode())
    subscribed = orjson.loads(await client.recv())
    assert subscribed["op"] == "subscribed"
    return dict(hello)


async def ws_batches(client: ClientConnection, count: int) -> list[dict[str, Any]]:
    batches = []
    with anyio.fail_after(10):
        while len(batches) < count:
            message = orjson.loads(await client.recv())
            if message["op"] == "batch":
                batches.append(message)
    return batches


async def sse_messages(live: Live, count: int, last_event_id: int | None = None,
                       query: str = "", subscribed: anyio.Event | None = None,
                       starts: list[dict[str, Any]] | None = None,
                       ) -> list[dict[str, Any]]:
    """Read ``count`` SSE batch messages (id/event/data) from /events, then disconnect.
    ``subscribed`` is set on the stream's first line: the server writes it (the ``start``
    message) once the client is subscribed to the hub; ``start`` messages go to ``starts``,
    not into the count."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    messages: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "GET", f"{live.http}/events{query}", headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, Any] = {}
        with anyio.fail_after(10):
            async for line in response.aiter_lines():
                if subscribed is not None:
                    subscribed.set()
                if line == "":
                    if fields.get("event") == "start":
                        if starts is not None:
                            starts.append(fields)
                    elif "data" in fields:
                        messages.append(fields)
                        if len(messages) == count:
                            break
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
    return messages


async def published_events(live: Live, event_type: str, count: int) -> None:
    """Wait until ``count`` events of ``event_type`` are stored and their batches were
    published to the hub (so every client got, or was spared, them)."""
    store, hub = live.services.store, live.services.hub
    with anyio.fail_after(10):
        while True:
            batches = [b for b in await store.batches_after(0, 1000) if b.type == event_type]
            if sum(b.count for b in batches) >= count and hub.last_seq >= batches[-1].seq:
                return
            await anyio.sleep(0.02)


Opener = Callable[[], Awaitable[None]]


@pytest.mark.anyio
async def test_a_ws_bot_and_an_sse_client_receive_the_same_batches(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers) as live:
        async with connect(live.ws) as bot:
            await ws_subscribe(bot)
            async with anyio.create_task_group() as tg:
                sse: list[dict[str, Any]] = []
                sse_subscribed = anyio.Event()

                async def read_sse() -> None:
                    sse.extend(await sse_messages(live, 2, subscribed=sse_subscribed))

                tg.start_soon(read_sse)
                with anyio.fail_after(10):
                    await sse_subscribed.wait()
                await live.emit(address_event(1), address_event(2), address_event(3),
                                block_event(500))
                ws = await ws_batches(bot, 2)
        by_type = {b["type"]: b for b in ws}
        assert by_type["address"]["count"] == 3  # three events, one batch
        assert by_type["block"]["count"] == 1
        for message in sse:
            batch = by_type[message["event"]]
            assert int(message["id"]) == batch["seq"]
            assert orjson.loads(message["data"]) == {k: v for k, v in batch.items() if k != "op"}


@pytest.mark.anyio
async def test_resume_delivers_exactly_the_missed_batches(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, window_events=1) as live:
        await live.emit(*(block_event(h) for h in range(1, 4)))
        first = await sse_messages(live, 3, last_event_id=0)
        seen = int(first[-1]["id"])
        # Disconnected: five more batches happen meanwhile.
        await live.emit(*(block_event(h) for h in range(4, 9)))
        with anyio.fail_after(5):
            while await live.services.store.last_seq() < seen + 5:
                await anyio.sleep(0.05)
        starts: list[dict[str, Any]] = []
        resumed = await sse_messages(live, 5, last_event_id=seen, starts=starts)
        assert [int(m["id"]) for m in resumed] == list(range(seen + 1, seen + 6))
        # The stream began with its position as a message with data (so every EventSource
        # implementation records the id): where it resumed from, and the newest seq.
        epoch = live.services.store.epoch
        [start] = starts
        assert int(start["id"]) == seen
        assert orjson.loads(start["data"]) == {"resume_from": seen, "last_seq": seen + 5,
                                               "epoch": epoch}
        # The WebSocket resumes the same way, and then goes live without a gap.
        async with connect(live.ws) as bot:
            await ws_subscribe(bot, resume_from=seen + 2)
            replayed = await ws_batches(bot, 3)
            await live.emit(block_event(9))
            [live_batch] = await ws_batches(bot, 1)
        assert [b["seq"] for b in replayed] == [seen + 3, seen + 4, seen + 5]
        assert live_batch["seq"] == seen + 6
        assert replayed[0]["events"][0]["data"] == {"height": 6, "hash": f"{6:064x}"}


@pytest.mark.anyio
async def test_a_fresh_sse_stream_starts_with_the_newest_seq_as_a_message_with_data(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, window_events=1) as live:
        await live.emit(*(block_event(h) for h in range(1, 3)), address_event(1))
        await published_events(live, "address", 1)
        newest = await live.services.store.last_seq()
        starts: list[dict[str, Any]] = []
        async with anyio.create_task_group() as tg:
            subscribed = anyio.Event()
            fresh: list[dict[str, Any]] = []

            async def read_fresh() -> None:
                # Its filter matches nothing stored: the start message is its only position.
                fresh.extend(await sse_messages(live, 1, query="?types=block", starts=starts,
                                                subscribed=subscribed))

            tg.start_soon(read_fresh)
            with anyio.fail_after(10):
                await subscribed.wait()
            await live.emit(block_event(3))
        [start] = starts
        assert int(start["id"]) == newest
        assert orjson.loads(start["data"]) == {"resume_from": newest, "last_seq": newest,
                                               "epoch": live.services.store.epoch}
        assert start["retry"] == "2000"
        [block] = fresh
        assert int(block["id"]) == newest + 1 and block["event"] == "block"


@pytest.mark.anyio
async def test_after_a_restart_a_new_sse_stream_starts_at_the_stored_seq(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with fresh_pg_database() as name:
        config = Settings(network="regtest", servers=(electrumx_servers[0].tcp_url,),
                          database_url=pg_url_for(name))
        port = free_port()
        app = create_app(config, producers=False)
        async with serving(app, port):
            live = Live(app.state.services, port)
            await live.emit(*(block_event(h) for h in range(1, 4)))
            await published_events(live, "block", 3)
            stored = await live.services.store.last_seq()
        app = create_app(config, producers=False)
        async with serving(app, port):  # nothing published yet by this process
            live = Live(app.state.services, port)
            starts: list[dict[str, Any]] = []
            async with anyio.create_task_group() as tg:
                subscribed = anyio.Event()

                async def read() -> None:
                    await sse_messages(live, 1, query="?types=block", starts=starts,
                                       subscribed=subscribed)

                tg.start_soon(read)
                with anyio.fail_after(10):
                    await subscribed.wait()
                await live.emit(block_event(4))
    # Not 0: a client resuming from there later would be sent the whole store again.
    assert [int(s["id"]) for s in starts] == [stored]


@pytest.mark.anyio
async def test_a_slow_ws_client_is_cut_with_its_resume_point_and_loses_nothing(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, Limits(client_buffer=4), window_events=1) as live:
        total, before = 300, 20
        await live.emit(*(block_event(h) for h in range(before)))
        while await live.services.store.last_seq() < before:
            await anyio.sleep(0.02)
        async with connect(live.ws, max_queue=1) as slow:
            # It resumes from `before`: its cut must never point behind that.
            await ws_subscribe(slow, types=["block"], resume_from=before)
            await live.emit(*(block_event(h) for h in range(before, total)))
            received: list[int] = []
            with anyio.fail_after(15), pytest.raises(ConnectionClosed) as closed:
                while True:
                    message = orjson.loads(await slow.recv())
                    received.append(message["seq"])
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4008
        reason = closed.value.rcvd.reason
        assert reason.startswith("slow client; resume_from=")
        resume_from = int(reason.rpartition("=")[2])
        assert resume_from >= before
        assert received == list(range(before + 1, resume_from + 1))  # all up to the point
        # Every batch stored before the resume: with a 4-batch buffer, live batches still
        # arriving during its replay would cut the resumed client too (not what this tests).
        with anyio.fail_after(15):
            while await live.services.store.last_seq() < total:
                await anyio.sleep(0.02)
        async with connect(live.ws) as again:
            await ws_subscribe(again, types=["block"], resume_from=resume_from)
            rest = await ws_batches(again, total - resume_from)
        assert [b["seq"] for b in rest] == list(range(resume_from + 1, total + 1))


@pytest.mark.anyio
async def test_a_ws_client_that_stops_reading_is_let_go_and_the_others_keep_streaming(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    # A buffer the hub never fills: only the send watchdog can notice this client.
    limits = Limits(client_buffer=100_000, ws_send_timeout=1.0)
    async with live_server(electrumx_servers, limits, window_events=1) as live:
        async with connect(live.ws, max_queue=1) as stuck, connect(live.ws) as reader:
            await ws_subscribe(stuck, types=["address"])  # then never reads again
            await ws_subscribe(reader, types=["address"])
            padding = "x" * 50_000  # 200 batches of 50 KB: far more than socket buffers
            big = [Event("address", ADDRESS, {**address_event(n).data, "memo": padding},
                         ts=time.time()) for n in range(200)]
            await live.emit(*big)
            assert len(await ws_batches(reader, 200)) == 200
            # Those may all fit the server's send buffer at once; the next send blocks.
            await live.emit(*(address_event(n) for n in range(5)))
            assert len(await ws_batches(reader, 5)) == 5
            hub = live.services.hub
            with anyio.fail_after(15):
                while hub.stats()["clients"].get("ws", 0) > 1:
                    await anyio.sleep(0.1)
            assert live.services.connections_by_ip == {"127.0.0.1": 1}  # the reader's
            await live.emit(address_event(1_000))
            [after] = await ws_batches(reader, 1)
            assert after["events"][0]["data"]["txid"] == f"{1_000:064x}"


@pytest.mark.anyio
async def test_bad_ws_input_gets_errors_and_the_connection_stays(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    limits = Limits(ws_max_addresses=1, ws_max_message_bytes=1024)
    async with live_server(electrumx_servers, limits) as live:
        async with connect(live.ws) as bot:
            await ws_subscribe(bot)
            for raw, code in [
                ("{nope", "bad_json"),
                ('{"op":"dance"}', "unknown_op"),
                ('{"op":"subscribe","addresses":["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"]}',
                 "invalid_address"),
                (orjson.dumps({"op": "subscribe", "addresses": [ADDRESS, OTHER_ADDRESS]}),
                 "limit_exceeded"),
            ]:
                await bot.send(raw)
                error = orjson.loads(await bot.recv())
                assert error["op"] == "error" and error["code"] == code, error
            await bot.send('{"op":"ping"}')
            assert orjson.loads(await bot.recv()) == {"op": "pong"}
            await bot.send("x" * 2000)
            with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await bot.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with httpx.AsyncClient(base_url=live.http) as http:
            bad = await http.get("/events", params={"min_sats": "abc"})
            assert bad.status_code == 400
            assert bad.json()["error"]["code"] == "bad_request"
            assert "min_sats" in bad.json()["error"]["message"]
            for query in ({"after": "9" * 30}, {"after": "+5"}, {"limit": "1_0"}):
                bad = await http.get("/api/v1/batches", params=query)
                assert bad.status_code == 400, query
            head = await http.head("/events")
            assert head.status_code == 200
            assert live.services.hub.stats()["clients"] == {}  # HEAD subscribes nobody
            bad = await http.post("/api/v1/watch", json={"addresses": [ADDRESS, "nope"]})
            assert bad.status_code == 400 and "nope" in bad.json()["error"]["message"]
            assert (await http.get("/api/v1/watch")).json() == {
                "addresses": [], "next": None, "total": 0}


@pytest.mark.anyio
async def test_api_keys_guard_streams_and_apis(electrumx_servers: list[ElectrumXServer]) -> None:
    async with live_server(electrumx_servers, api_keys=("s3cret",)) as live:
        async with httpx.AsyncClient(base_url=live.http) as http:
            missing = await http.get("/api/v1/stats")
            assert missing.status_code == 401
            assert missing.json()["error"]["code"] == "unauthorized"
            assert (await http.get("/api/v1/stats?key=wrong")).status_code == 401
            ok = await http.get("/api/v1/stats", headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200
            assert (await http.get("/healthz")).status_code in (200, 503)  # open
        with pytest.raises(Exception, match="401"):
            async with connect(live.ws):
                pass
        async with connect(f"{live.ws}?key=s3cret") as bot:
            assert (await ws_subscribe(bot))["op"] == "hello"


@pytest.mark.anyio
async def test_shutdown_says_goodbye_with_1001_and_flushes_pending_batches(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with fresh_pg_database() as name:
        config = Settings(network="regtest", servers=(electrumx_servers[0].tcp_url,),
                          database_url=pg_url_for(name), window_ms=60_000)
        app = create_app(config)
        port = free_port()
        async with serving(app, port) as server:
            services: Services = app.state.services
            async with connect(f"ws://127.0.0.1:{port}/ws") as bot, \
                    connect(f"ws://127.0.0.1:{port}/ws") as idle:
                await ws_subscribe(bot)
                assert orjson.loads(await idle.recv())["op"] == "hello"  # never subscribes
                # A window of one minute: this event is still pending at shutdown.
                await services.runner.submit(address_event(42))
                with anyio.fail_after(5):  # in its window, not yet stored
                    while services.runner.stats()["open_window_events"] < 1:
                        await anyio.sleep(0.01)
                server.should_exit = True  # the production shutdown: streams end first
                with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    while True:  # the producers' batches may still come first
                        assert orjson.loads(await bot.recv())["op"] == "batch"
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
                with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    await idle.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        # The pending event was stored on the way out.
        from batcher.store import open_store

        async with open_store(pg_url_for(name)) as store:
            batches = await store.batches_after(0, 100)
        # The producers ran too (block, fees, server batches); the address batch is ours.
        [stored] = [b for b in batches if b.type == "address"]
        assert stored.events[0].data["txid"] == f"{42:064x}"


@pytest.mark.anyio
async def test_metrics_expose_clients_batches_latencies_and_servers(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers) as live:
        async with connect(live.ws) as bot, httpx.AsyncClient(base_url=live.http) as http:
            await ws_subscribe(bot)
            await live.emit(address_event(1), address_event(2), address_event(3))
            await ws_batches(bot, 1)
            assert (await http.get("/healthz")).status_code == 200  # opens a pool connection
            text = (await http.get("/metrics")).text
    lines = {line.split(" ")[0]: float(line.split(" ")[1])
             for line in text.splitlines() if line and not line.startswith("#")}
    assert lines['chainwire_clients{transport="ws"}'] == 1
    assert lines['chainwire_deliveries_total{transport="ws"}'] == 1
    assert lines['chainwire_batch_events_count{type="address"}'] == 1
    assert lines['chainwire_batch_events_sum{type="address"}'] == 3
    assert lines["chainwire_batcher_events_saved_total"] == 2  # 3 events, 1 message
    assert lines["chainwire_window_latency_seconds_max"] > 0
    assert lines["chainwire_store_latency_seconds_max"] > 0
    connected = [k for k in lines if k.startswith("chainwire_pool_server_state")
                 and 'state="connected"' in k]
    assert connected, "the pool's servers and their state are exported"


@pytest.mark.anyio
async def test_unsubscribing_the_last_address_means_none_not_all(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers) as live, connect(live.ws) as bot:
        await ws_subscribe(bot, types=["address", "block"], addresses=[ADDRESS])
        await bot.send(orjson.dumps({"op": "unsubscribe", "addresses": [ADDRESS]}).decode())
        assert orjson.loads(await bot.recv())["addresses"] == []
        await live.emit(address_event(1, OTHER_ADDRESS), address_event(2, ADDRESS))
        await published_events(live, "address", 2)  # to the hub, before the block
        await live.emit(block_event(1))
        [first] = await ws_batches(bot, 1)
        assert first["type"] == "block"
