"""ServerPool against real ElectrumX servers (tests/bed)."""

from __future__ import annotations

import hashlib
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from bench.proxy import DelayProxy
from stream.electrum import (
    HeaderNotification,
    Moved,
    NoServerAvailable,
    ServerError,
    ServerPool,
    StatusNotification,
)
from tests.bed.electrumx import STOCK_LIMITS, BedCerts, ElectrumXServer
from tests.bed.node import RegtestNode

pytestmark = pytest.mark.anyio

GET = "blockchain.transaction.get"


def by_url(pool: ServerPool) -> dict[str, dict[str, Any]]:
    return {s["url"]: s for s in pool.stats()["servers"]}


async def until_connected(pool: ServerPool, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait for ``count`` connected servers on the pool's own change signal (a server's
    state changes wake it), not by polling."""
    with anyio.fail_after(timeout):
        while pool.stats()["connected"] < count:
            await pool.wait_changed()


async def test_no_connection_before_the_first_request(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    urls = [s.tcp_url for s in electrumx_servers]
    start = time.monotonic()
    async with ServerPool(urls, network="regtest") as pool:
        assert time.monotonic() - start < 0.5
        await anyio.sleep(0.2)
        stats = pool.stats()
        assert (stats["size"], stats["connected"]) == (0, 0)
        assert {s["state"] for s in stats["servers"]} == {"idle"}
        tip = await pool.request("blockchain.headers.subscribe")
        assert tip["height"] == electrumx_servers[0].tip()[0]
        assert pool.stats()["size"] == 1


async def test_unreachable_servers_do_not_delay_start_up() -> None:
    async with ServerPool(["tcp://127.0.0.1:9", "ssl://127.0.0.1:9"], connect_timeout=0.5,
                          backoff_base=0.1) as pool:
        assert pool.stats()["size"] == 0
        with pytest.raises(NoServerAvailable):
            await pool.request("server.ping")


async def test_pool_grows_with_requests_then_by_two_under_load(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    # 6 entries: each bed server by TCP and by TLS.
    urls = [s.tcp_url for s in electrumx_servers] + [s.ssl_url for s in electrumx_servers]
    async with ServerPool(urls, network="regtest", burst=2, grow_every=3, min_size=4,
                          surge_in_flight=5, surge_step=2, max_size=6) as pool:
        sizes = []
        for _ in range(12):
            await pool.request("server.ping")
            sizes.append(pool.stats()["size"])
        assert sizes == [1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4]
        # More than 5 requests in flight: 2 more servers at once.
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(pool.request, "server.ping")
        assert pool.stats()["size"] == 6
        # Never more than configured.
        await pool.batch([("blockchain.block.header", [h]) for h in range(50)])
        assert pool.stats()["size"] == 6


async def test_single_requests_go_round_robin_over_servers(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    urls = [s.tcp_url for s in electrumx_servers]
    async with ServerPool(urls, network="regtest", burst=3) as pool:
        for _ in range(3):
            await pool.request("server.ping")
        await until_connected(pool, 3, timeout=5)
        before = {u: s["requests"] for u, s in by_url(pool).items()}
        for _ in range(30):
            await pool.request("server.ping")
        counts = [s["requests"] - before[u] for u, s in by_url(pool).items()]
        assert counts == [10, 10, 10]


async def test_batch_of_400_with_duplicates_matches_electrumx_in_order(
    electrumx_servers: list[ElectrumXServer], known_txids: list[str],
) -> None:
    unknown = "00" * 32
    txids = known_txids + random.Random(7).sample(known_txids, 99) + [unknown]
    random.Random(8).shuffle(txids)
    reference = electrumx_servers[0]

    def ground_truth() -> dict[str, str]:
        return {t: reference.request(GET, t) for t in known_txids}

    truth = await anyio.to_thread.run_sync(ground_truth)
    urls = [s.tcp_url for s in electrumx_servers]
    async with ServerPool(urls, network="regtest") as pool:
        await pool.request("server.ping")  # 1 server; the batch grows the pool to 3
        results = await pool.get_transactions_batch(txids)
        assert len(results) == 400
        for txid, result in zip(txids, results, strict=True):
            if txid == unknown:
                assert isinstance(result, ServerError)
                assert "No such mempool or blockchain transaction" in result.message
            else:
                assert result == truth[txid]
        stats = pool.stats()
        assert stats["requests"] == 1 + 301  # duplicates are sent once
        assert all(s["requests"] > 25 for s in stats["servers"])  # spread over all 3


async def test_invalid_txid_or_address_raises_naming_it_before_sending(
    electrumx_servers: list[ElectrumXServer], known_txids: list[str],
) -> None:
    async with ServerPool([electrumx_servers[0].tcp_url], network="regtest") as pool:
        with pytest.raises(ValueError, match="'nothex'"):
            await pool.get_transactions_batch([known_txids[0], "nothex"])
        mainnet = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
        with pytest.raises(ValueError, match=mainnet):
            await pool.get_balances_batch([mainnet])
        assert pool.stats()["requests"] == 0 and pool.stats()["size"] == 0


async def test_address_batches_return_history_balance_and_utxos_in_order(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
    wait_for_tip: Any,
) -> None:
    paid = [regtest_node.new_address(kind) for kind in ("p2wpkh", "p2pkh", "p2tr")]
    empty = regtest_node.new_address()
    txids = [regtest_node.pay(a, 10_000 * (i + 1)) for i, a in enumerate(paid)]
    regtest_node.mine(1)
    await wait_for_tip.wait_async()
    addresses = [*paid, empty, paid[0]]
    async with ServerPool([s.tcp_url for s in electrumx_servers], network="regtest") as pool:
        histories = await pool.get_histories_batch(addresses)
        balances = await pool.get_balances_batch(addresses)
        utxos = await pool.get_utxos_batch(addresses)
    height = regtest_node.height
    assert [h and h[0]["tx_hash"] for h in histories] == [*txids, [], txids[0]]
    assert all(h[0]["height"] == height for h in histories if h)
    assert [b["confirmed"] for b in balances] == [10_000, 20_000, 30_000, 0, 10_000]
    assert [[u["value"] for u in us] for us in utxos] == [[10_000], [20_000], [30_000], [],
                                                          [10_000]]


async def test_batch_completes_when_one_server_stops_and_another_is_killed(
    electrumx_servers: list[ElectrumXServer], known_txids: list[str],
) -> None:
    expected = await anyio.to_thread.run_sync(
        lambda: [electrumx_servers[2].request(GET, t) for t in known_txids])
    stopped, killed, survivor = electrumx_servers
    async with DelayProxy("127.0.0.1", stopped.tcp_port, delay=0.3) as p1, \
            DelayProxy("127.0.0.1", killed.tcp_port, delay=0.3) as p2, \
            DelayProxy("127.0.0.1", survivor.tcp_port, delay=0.3) as p3:
        urls = [p1.url(), p2.url(), p3.url()]
        async with ServerPool(urls, network="regtest", burst=3, backoff_base=5.0) as pool:
            for _ in range(3):
                await pool.request("server.ping")
            await until_connected(pool, 3, timeout=10)
            results: list[Any] = []

            async def fetch() -> None:
                results.extend(await pool.get_transactions_batch(known_txids))

            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch)
                with anyio.fail_after(5):
                    while not all(s["in_flight"] for s in pool.stats()["servers"]):
                        await anyio.sleep(0.01)
                tg.start_soon(anyio.to_thread.run_sync, stopped.stop)
                killed.kill()
            assert results == expected
            servers = by_url(pool)
            assert servers[p1.url()]["failures"] >= 1
            assert servers[p2.url()]["failures"] >= 1
            assert servers[p3.url()]["failures"] == 0
            assert servers[p3.url()]["requests"] > 100  # it took over the others' share


async def test_throttling_server_is_backed_off_while_the_others_carry_on(
    electrumx_servers: list[ElectrumXServer], known_txids: list[str],
    start_electrumx: Callable[..., ElectrumXServer],
) -> None:
    # ElectrumX's stock limits: each error answer costs 100; past the soft limit (1,000)
    # the server delays and then stalls the session's requests.
    stock = start_electrumx(**STOCK_LIMITS)
    urls = [stock.tcp_url] + [s.tcp_url for s in electrumx_servers[:2]]
    unknown = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(150)]
    async with ServerPool(urls, network="regtest", burst=3, backoff_base=30.0,
                          request_timeout=3.0) as pool:
        for _ in range(3):
            await pool.request("server.ping")
        await until_connected(pool, 3, timeout=10)
        throttled = False
        for _ in range(10):
            # Errors for unknown txids are per item; they only cost the servers.
            results = await pool.get_transactions_batch(unknown + known_txids[:30])
            assert all(isinstance(r, ServerError) for r in results[:150])
            assert all(isinstance(r, str) for r in results[150:])
            if by_url(pool)[stock.tcp_url]["failures"]:
                throttled = True
                break
        assert throttled, "the stock server never throttled"
        seen = by_url(pool)[stock.tcp_url]["requests"]
        for _ in range(20):
            assert await pool.request(GET, known_txids[0])
        await pool.get_transactions_batch(known_txids)
        stats = by_url(pool)
        assert stats[stock.tcp_url]["requests"] == seen  # not hammered while backed off
        assert stats[stock.tcp_url]["state"] in ("backoff", "connecting")


async def test_tls_to_the_ssl_ports_with_optional_pinning(
    electrumx_servers: list[ElectrumXServer], bed_certs: BedCerts,
) -> None:
    urls = [s.ssl_url for s in electrumx_servers]
    async with ServerPool(urls, network="regtest", burst=3) as pool:  # self-signed: accepted
        for _ in range(3):
            assert await pool.request("server.ping") is None
        await until_connected(pool, 3, timeout=10)
        assert [s["protocol"] for s in pool.stats()["servers"]] == ["1.6"] * 3
    async with ServerPool(urls[:1], network="regtest",
                          ssl_context=bed_certs.client_context(verify=True)) as pool:
        assert await pool.request("server.ping") is None
    der = ssl.PEM_cert_to_DER_cert(bed_certs.cert_path.read_text())
    key = urls[0].removeprefix("ssl://")
    async with ServerPool(urls[:1], network="regtest",
                          pinned_certs={key: hashlib.sha256(der).hexdigest()}) as pool:
        assert await pool.request("server.ping") is None
    async with ServerPool(urls[:1], network="regtest", pinned_certs={key: "ab" * 32},
                          connect_timeout=1.0) as pool:
        with pytest.raises(NoServerAvailable):
            await pool.request("server.ping")


async def test_a_server_that_never_answers_is_timed_out_and_avoided(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    # A fake: no real ElectrumX hangs on purpose.
    async def swallow(stream: Any) -> None:
        async with stream:
            async for _ in stream:
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, swallow)
        urls = [f"tcp://127.0.0.1:{port}", electrumx_servers[0].tcp_url]
        async with ServerPool(urls, network="regtest", connect_timeout=0.5,
                              request_timeout=2.0) as pool:
            start = time.monotonic()
            for _ in range(5):
                assert await pool.request("server.ping") is None
            assert time.monotonic() - start < 5
            assert by_url(pool)[urls[0]]["state"] in ("backoff", "connecting")
        tg.cancel_scope.cancel()


async def test_subscriptions_notify_and_move_when_their_server_goes(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
) -> None:
    urls = [s.tcp_url for s in electrumx_servers]
    address = regtest_node.new_address()
    async with ServerPool(urls, network="regtest") as pool:
        async with pool.subscribe_headers(servers=2) as headers, \
                pool.subscribe_scripthashes() as subs:
            assert len(headers.current) == 2
            scripthash = pool.scripthash(address)
            assert await subs.add_addresses([address]) == {scripthash: None}
            await anyio.to_thread.run_sync(regtest_node.pay, address, 25_000)
            with anyio.fail_after(10):
                note = await subs.__anext__()
            assert isinstance(note, StatusNotification) and note.scripthash == scripthash
            mempool_status = note.status
            assert mempool_status is not None

            height = regtest_node.height + 1
            await anyio.to_thread.run_sync(regtest_node.mine)
            got: set[str] = set()
            with anyio.fail_after(10):
                async for h in headers:
                    assert isinstance(h, HeaderNotification), h
                    assert h.height == height, (h, headers.current)
                    got.add(h.server)
                    if len(got) == 2:
                        break
                confirmed = await subs.__anext__()
            assert isinstance(confirmed, StatusNotification)
            assert confirmed.status not in (None, mempool_status)

            carrier = subs.carrier(scripthash)
            victim = next(s for s in electrumx_servers if s.tcp_url == carrier)
            victim.kill()
            with anyio.fail_after(10):
                moved = await subs.__anext__()
            assert isinstance(moved, Moved)
            assert moved.old_server == carrier and moved.new_server != carrier
            assert moved.statuses == {scripthash: confirmed.status}
            assert subs.carrier(scripthash) == moved.new_server

            await anyio.to_thread.run_sync(regtest_node.pay, address, 5_000)
            with anyio.fail_after(10):
                after = await subs.__anext__()
            assert isinstance(after, StatusNotification)
            assert after.server == moved.new_server and after.status != confirmed.status


async def test_works_with_electrumx_stock_one_second_padding_hold(
    known_txids: list[str], start_electrumx: Callable[..., ElectrumXServer],
) -> None:
    stock = start_electrumx(pad_wait=None)  # small messages may be held for up to 1 s
    async with ServerPool([stock.tcp_url], network="regtest", request_timeout=5.0) as pool:
        for _ in range(3):
            assert await pool.request("server.ping") is None
        raw = await pool.get_transactions_batch(known_txids[:120])
        assert raw == [await anyio.to_thread.run_sync(stock.request, GET, t)
                       for t in known_txids[:120]]
        assert pool.stats()["servers"][0]["failures"] == 0
