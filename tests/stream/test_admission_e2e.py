"""Connection caps, client IPs and bounded replays, against the real server over real
sockets: clients connect from several loopback addresses (127.0.0.2, ...) as clients
behind different IPs would, and send X-Forwarded-For as a spoofer or a proxy would."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from batcher.events import Batch, Event
from stream.services import Limits
from tests.bed.electrumx import ElectrumXServer
from tests.server_process import ChainwireProcess, free_port
from tests.stream.clients import Refused, StreamClients, until
from tests.stream.live import Live, live_server
from tests.stream.test_streaming_e2e import ADDRESS, address_event, block_event, ws_batches


def connections(live: Live) -> dict[str, Any]:
    stats: dict[str, Any] = live.services.stats()["connections"]
    return stats


def assert_refused(result: object, status: int, code: str) -> None:
    assert isinstance(result, Refused), f"expected a {status}, got {result!r}"
    assert (result.status, result.error["code"]) == (status, code), result
    assert result.error["message"]


async def ws_hello(client: ClientConnection) -> dict[str, Any]:
    hello: dict[str, Any] = orjson.loads(await client.recv())
    assert hello["op"] == "hello"
    return hello


@pytest.mark.anyio
async def test_the_101st_connection_from_one_ip_is_refused_sse_or_ws_and_others_are_not(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers) as live, StreamClients(live) as clients:
        assert live.services.limits.max_connections_per_ip == 100  # the default
        for n in range(100):  # mixed: 50 SSE streams and 50 WebSockets
            if n % 2:
                await clients.open_sse()
            else:
                await ws_hello(await clients.open_ws())
        assert_refused(await clients.sse(), 429, "too_many_connections")
        assert_refused(await clients.ws(), 429, "too_many_connections")
        # Other client IPs are not affected.
        await clients.open_sse("127.0.0.2")
        await ws_hello(await clients.open_ws("127.0.0.3"))
        seen = connections(live)
        assert seen["total"] == 102
        assert seen["top_ips"][0] == {"ip": "127.0.0.1", "connections": 100}
        assert seen["refused"] == {"too_many_connections": 2, "server_full": 0}
        async with httpx.AsyncClient(base_url=live.http) as http:  # what an operator sees
            stats = (await http.get("/api/v1/stats")).json()
            metrics = (await http.get("/metrics")).text
        assert "chainwire_connections 102.0" in metrics
        assert 'chainwire_connections_refused_total{reason="too_many_connections"} 2.0' in metrics
        assert stats["connections"]["total"] == 102
        assert {"ip": "127.0.0.2", "connections": 1} in stats["connections"]["top_ips"]
        await clients.aclose()  # every client hangs up
        await until(lambda: connections(live)["total"] == 0)
        assert live.services.connections_by_ip == {}


@pytest.mark.anyio
@pytest.mark.parametrize("held", ["sse", "ws", "mixed"])
async def test_a_cap_held_by_either_transport_refuses_both(
    electrumx_servers: list[ElectrumXServer], held: str,
) -> None:
    async with live_server(electrumx_servers, Limits(max_connections_per_ip=3)) as live, \
            StreamClients(live) as clients:
        kinds = {"sse": ["sse"] * 3, "ws": ["ws"] * 3, "mixed": ["ws", "sse", "ws"]}[held]
        opened: list[httpx.Response | ClientConnection] = []
        for kind in kinds:
            opened.append(await clients.open_sse() if kind == "sse" else await clients.open_ws())
        assert_refused(await clients.sse(), 429, "too_many_connections")
        assert_refused(await clients.ws(), 429, "too_many_connections")
        # A slot is freed when its stream ends, and only then.
        first = opened[0]
        if isinstance(first, httpx.Response):
            await first.aclose()
        else:
            await first.close()
        await until(lambda: connections(live)["total"] == 2)
        await clients.open_ws() if held == "sse" else await clients.open_sse()
        assert_refused(await clients.sse(), 429, "too_many_connections")
        assert connections(live)["total"] == 3


@pytest.mark.anyio
async def test_past_the_global_cap_every_ip_gets_server_full(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    limits = Limits(max_connections=3, max_connections_per_ip=2)
    async with live_server(electrumx_servers, limits) as live, StreamClients(live) as clients:
        await clients.open_sse("127.0.0.1")
        await clients.open_ws("127.0.0.1")
        held = await clients.open_ws("127.0.0.2")
        assert_refused(await clients.sse("127.0.0.3"), 503, "server_full")
        assert_refused(await clients.ws("127.0.0.3"), 503, "server_full")
        assert_refused(await clients.sse("127.0.0.2"), 503, "server_full")  # under its cap
        assert_refused(await clients.ws("127.0.0.1"), 429, "too_many_connections")
        await held.close()
        await until(lambda: connections(live)["total"] == 2)
        await ws_hello(await clients.open_ws("127.0.0.3"))
        assert connections(live)["refused"] == {"too_many_connections": 1, "server_full": 3}


@pytest.mark.anyio
async def test_slots_are_freed_however_a_stream_ends(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    limits = Limits(max_connections_per_ip=2, client_buffer=2, ws_max_errors=1)
    async with live_server(electrumx_servers, limits, window_events=1) as live, \
            StreamClients(live) as clients:
        # A WS client closed by the server for bad messages (1008).
        bot = await clients.open_ws()
        await ws_hello(bot)
        await bot.send("{nope")
        await bot.send("{nope")
        with anyio.fail_after(5), pytest.raises(ConnectionClosed):
            while True:
                await bot.recv()
        await until(lambda: connections(live)["total"] == 0)
        # An SSE client cut by the hub for falling behind: three batches offered with no
        # chance for its task to run in between overflow its buffer of two.
        await live.emit(block_event(1))
        await until(lambda: live.services.hub.last_seq == 1)
        [stored] = await live.services.store.batches_after(0, 1)
        sse = await clients.open_sse(query="?types=block")
        await until(lambda: live.services.hub.stats()["clients"].get("sse") == 1)
        for _ in range(3):
            live.services.hub.publish(stored)
        await until(lambda: live.services.hub.stats()["disconnects"].get("sse:slow_client") == 1)
        await until(lambda: connections(live)["total"] == 0)
        await sse.aclose()
        # HEAD and refused requests never hold a slot; nothing goes below zero.
        async with httpx.AsyncClient(base_url=live.http) as http:
            assert (await http.head("/events")).status_code == 200
            bad = await http.get("/events", params={"min_sats": "x"})
            assert bad.status_code == 400
        assert connections(live)["total"] == 0
        await clients.open_sse()
        await clients.open_ws()
        assert_refused(await clients.sse(), 429, "too_many_connections")
        await clients.aclose()
        await until(lambda: connections(live)["total"] == 0)
        assert live.services.connections_by_ip == {}


@pytest.mark.anyio
async def test_spoofed_x_forwarded_for_is_ignored_by_default(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, Limits(max_connections_per_ip=2)) as live, \
            StreamClients(live) as clients:
        await clients.open_sse(headers={"X-Forwarded-For": "10.0.0.1"})
        await clients.open_ws(headers={"X-Forwarded-For": "10.0.0.2"})
        # A fresh "IP" on every request buys nothing: it is counted under its socket's.
        assert_refused(await clients.sse(headers={"X-Forwarded-For": "10.0.0.3"}),
                       429, "too_many_connections")
        assert_refused(await clients.ws(headers={"X-Forwarded-For": "10.0.0.4"}),
                       429, "too_many_connections")
        assert live.services.connections_by_ip == {"127.0.0.1": 2}


@pytest.mark.anyio
async def test_a_trusted_proxy_s_clients_are_capped_by_their_forwarded_ip(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, Limits(max_connections_per_ip=2),
                           trusted_proxies=("127.0.0.2", "127.0.0.4/30")) as live, \
            StreamClients(live) as clients:
        # Through the proxy at 127.0.0.2: each client IP has its own cap.
        await clients.open_sse("127.0.0.2", {"X-Forwarded-For": "10.0.0.1"})
        await clients.open_ws("127.0.0.2", {"X-Forwarded-For": "10.0.0.1"})
        assert_refused(await clients.sse("127.0.0.2", {"X-Forwarded-For": "10.0.0.1"}),
                       429, "too_many_connections")
        assert_refused(await clients.ws("127.0.0.2", {"X-Forwarded-For": "10.0.0.1"}),
                       429, "too_many_connections")
        await clients.open_sse("127.0.0.2", {"X-Forwarded-For": "10.0.0.2"})
        await clients.open_ws("127.0.0.2", {"X-Forwarded-For": "10.0.0.2"})
        # A chain: the client is the rightmost address that is not a trusted proxy.
        await clients.open_ws("127.0.0.2", {"X-Forwarded-For": "6.6.6.6, 10.0.0.3, 127.0.0.5"})
        # A proxy in a trusted CIDR.
        await clients.open_sse("127.0.0.5", {"X-Forwarded-For": "10.0.0.4"})
        # 127.0.0.3 is no proxy of ours: its X-Forwarded-For is ignored.
        await clients.open_sse("127.0.0.3", {"X-Forwarded-For": "10.0.0.7"})
        await clients.open_ws("127.0.0.3", {"X-Forwarded-For": "10.0.0.8"})
        assert_refused(await clients.sse("127.0.0.3", {"X-Forwarded-For": "10.0.0.9"}),
                       429, "too_many_connections")
        assert live.services.connections_by_ip == {
            "10.0.0.1": 2, "10.0.0.2": 2, "10.0.0.3": 1, "10.0.0.4": 1, "127.0.0.3": 2}


def test_chainwire_serve_takes_the_caps_and_trusted_proxies_from_the_environment(
    tmp_path: Path,
) -> None:
    env = {"CHAINWIRE_NETWORK": "regtest",
           "CHAINWIRE_SERVERS": f"tcp://127.0.0.1:{free_port()}",  # nobody: not needed here
           "CHAINWIRE_MAX_CONNECTIONS_PER_IP": "1", "CHAINWIRE_MAX_CONNECTIONS": "2",
           "CHAINWIRE_TRUSTED_PROXIES": "127.0.0.2", "CHAINWIRE_SSE_RETRY_MS": "1234"}
    with ChainwireProcess(env, cwd=tmp_path) as server:
        url = f"{server.url}/events"
        with httpx.Client(timeout=10) as direct, httpx.Client(
            timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2")
        ) as proxied, direct.stream("GET", url) as first:
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: a dropped iterator closes the response
            opening = list(iter(lambda: next(lines), ""))
            assert "retry: 1234" in opening, opening
            with direct.stream("GET", url, headers={"X-Forwarded-For": "10.0.0.1"}) as spoof:
                assert spoof.status_code == 429
            with proxied.stream("GET", url, headers={"X-Forwarded-For": "10.0.0.1"}) as ok:
                assert ok.status_code == 200
                with proxied.stream("GET", url,
                                    headers={"X-Forwarded-For": "10.0.0.2"}) as full:
                    assert full.status_code == 503
                    assert orjson.loads(full.read())["error"]["code"] == "server_full"
    log = server.log()
    assert "stream limits: " in log and "max_connections_per_ip=1" in log
    assert "CHAINWIRE_TRUSTED_PROXIES=127.0.0.2" in log


async def hang_up(client: httpx.Response | ClientConnection) -> None:
    await (client.aclose() if isinstance(client, httpx.Response) else client.close())


class _HeldStore:
    """Holds every replay read until ``release`` is set, counting reads in flight."""

    def __init__(self, read: Any) -> None:
        self.read = read
        self.release = anyio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def batches_after(self, seq: int, limit: int = 100) -> list[Batch]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            batches: list[Batch] = await self.read(seq, limit)
            return batches
        finally:
            self.in_flight -= 1


@pytest.mark.anyio
async def test_fifty_resumers_from_zero_replay_eight_at_a_time_and_live_clients_stream(
    electrumx_servers: list[ElectrumXServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with live_server(electrumx_servers, Limits(max_replays=8), window_events=1) as live, \
            StreamClients(live) as clients:
        await live.emit(*(block_event(h) for h in range(1, 21)))
        await until(lambda: live.services.hub.last_seq >= 20)
        store = live.services.store
        held = _HeldStore(store.batches_after)
        monkeypatch.setattr(store, "batches_after", held.batches_after)
        live_ws = await clients.open_ws()
        await ws_hello(live_ws)
        await live_ws.send('{"op":"subscribe","types":["address"]}')
        live_sse = await clients.open_sse(query="?types=address")
        resumers: list[httpx.Response | ClientConnection] = []
        for n in range(50):  # none of them reads a byte of what it is sent
            if n % 2:
                resumers.append(await clients.open_sse(headers={"Last-Event-ID": "0"}))
            else:
                bot = await clients.open_ws()
                await bot.send('{"op":"subscribe","resume_from":0}')
                resumers.append(bot)
        gate = live.services.replays
        await until(lambda: gate.waiting == 42)
        assert (gate.active, held.in_flight, held.most_in_flight) == (8, 8, 8)
        assert live.services.stats()["replays"]["waiting"] == 42
        # Meanwhile live clients keep streaming.
        await live.emit(address_event(1))
        [batch] = await ws_batches(live_ws, 1)
        assert batch["events"][0]["data"]["address"] == ADDRESS
        lines = live_sse.aiter_lines()
        with anyio.fail_after(10):
            while not (await anext(lines)).startswith("data: "):
                pass
        held.release.set()
        await until(lambda: gate.active == 0 and gate.waiting == 0)
        assert held.most_in_flight == 8 and gate.peak == 8
        # Each resumer got its whole replay, then the live batch.
        first_ws = resumers[0]
        assert isinstance(first_ws, ClientConnection)
        replayed = await ws_batches(first_ws, 21)
        assert [b["seq"] for b in replayed] == list(range(1, 22))


@pytest.mark.anyio
async def test_a_client_that_stops_reading_is_cut_at_its_byte_bound(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    # The batch-count bound is out of reach and the send watchdog slow: only the byte
    # bound can end this client's stream.
    limits = Limits(client_buffer=100_000, client_buffer_bytes=1_000_000, ws_send_timeout=120)
    async with live_server(electrumx_servers, limits, window_events=1) as live, \
            StreamClients(live) as clients:
        stuck = await clients.open_ws(rcvbuf=4096, max_queue=1)
        await ws_hello(stuck)
        await stuck.send('{"op":"subscribe","types":["address"]}')
        assert orjson.loads(await stuck.recv())["op"] == "subscribed"
        padding = "x" * 50_000  # 100 batches of 50 KB: 5 MB for one client
        await live.emit(*(Event("address", ADDRESS, {**address_event(n).data, "memo": padding},
                                ts=time.time()) for n in range(100)))
        hub = live.services.hub
        await until(lambda: hub.stats()["disconnects"].get("ws:slow_client") == 1)
        received = []
        with anyio.fail_after(15), pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append(orjson.loads(await stuck.recv())["seq"])
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
        resume_from = int(closed.value.rcvd.reason.rpartition("=")[2])
        assert received == list(range(1, resume_from + 1)) and resume_from < 100
        again = await clients.open_ws()
        await ws_hello(again)
        await again.send(orjson.dumps({"op": "subscribe", "types": ["address"],
                                       "resume_from": resume_from}).decode())
        rest = await ws_batches(again, 100 - resume_from)
        assert [b["seq"] for b in rest] == list(range(resume_from + 1, 101))


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_resumer_that_hangs_up_frees_its_replay_slot_for_the_next(
    electrumx_servers: list[ElectrumXServer], monkeypatch: pytest.MonkeyPatch, transport: str,
) -> None:
    async with live_server(electrumx_servers, Limits(max_replays=1), window_events=1) as live, \
            StreamClients(live) as clients:
        await live.emit(block_event(1))
        await until(lambda: live.services.hub.last_seq >= 1)
        held = _HeldStore(live.services.store.batches_after)
        monkeypatch.setattr(live.services.store, "batches_after", held.batches_after)
        gate = live.services.replays

        async def resumer() -> httpx.Response | ClientConnection:
            if transport == "sse":
                return await clients.open_sse(headers={"Last-Event-ID": "0"})
            bot = await clients.open_ws()
            await bot.send('{"op":"subscribe","resume_from":0}')
            return bot

        first = await resumer()
        await until(lambda: gate.active == 1)
        second = await resumer()
        await until(lambda: gate.waiting == 1)
        await hang_up(first)  # the one replaying: the waiting one takes its slot
        await until(lambda: (gate.active, gate.waiting, gate.pages) == (1, 0, 2))
        await hang_up(second)
        await until(lambda: (gate.active, gate.waiting) == (0, 0))
        assert held.in_flight == 0 and gate.pages == 2 and held.most_in_flight == 1
        third = await resumer()  # and the gate still works
        held.release.set()
        if isinstance(third, ClientConnection):
            assert [b["seq"] for b in await ws_batches(third, 1)] == [1]
        await until(lambda: gate.active == 0 and gate.pages == 3)
