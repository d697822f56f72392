"""ServerPool.ban, request_on and the "lagging"/"banned" state labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from stream.electrum import (
    ConnectionLost,
    HeadersMoved,
    Moved,
    PoolConfig,
    ServerPool,
    ServerState,
    StatusNotification,
    parse_server,
)
from stream.electrum.upstream import Upstream
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.fake_electrum import FakeElectrum

pytestmark = pytest.mark.anyio


def server_stats(pool: ServerPool, url: str) -> dict[str, Any]:
    return next(s for s in pool.stats()["servers"] if s["url"] == url)


async def wait_state(pool: ServerPool, url: str, state: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    with anyio.fail_after(timeout):
        while server_stats(pool, url)["state"] != state:
            await anyio.sleep(0.02)


def _ignore(*args: object) -> None:
    pass


def test_state_label_priority_banned_backoff_lagging() -> None:
    upstream = Upstream(parse_server("tcp://127.0.0.1:1"), PoolConfig(),
                        on_notification=_ignore, on_change=_ignore)
    assert upstream.stats(0.0, lagging=True)["state"] == "idle"  # lagging needs a connection
    upstream.state = ServerState.CONNECTED
    assert upstream.stats(10.0)["state"] == "connected"
    assert upstream.stats(10.0, lagging=True)["state"] == "lagging"
    upstream.backoff_until = 12.0
    assert upstream.stats(10.0, lagging=True)["state"] == "backoff"
    upstream.ban("sent a header that does not link", until=20.0)
    stats = upstream.stats(10.0, lagging=True)
    assert (stats["state"], stats["ban_reason"], stats["banned_s"]) == (
        "banned", "sent a header that does not link", 10.0)
    assert not upstream.usable(19.9) and upstream.backoff_until == 20.0
    after = upstream.stats(20.0)
    assert (after["state"], after["ban_reason"]) == ("connected", None)
    upstream.state = ServerState.CLOSED
    assert upstream.stats(10.0)["state"] == "closed"


async def test_ban_moves_headers_keeps_the_server_out_then_lets_it_back(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    urls = [s.tcp_url for s in electrumx_servers]
    async with ServerPool(urls, network="regtest", backoff_base=0.1) as pool, \
            pool.subscribe_headers(servers=2) as headers:
        victim, kept = (u.url for u in headers.servers)
        (spare,) = set(urls) - {victim, kept}
        pool.ban(victim, "lied about a header", seconds=4.0)
        stats = server_stats(pool, victim)
        assert (stats["state"], stats["ban_reason"]) == ("banned", "lied about a header")
        assert victim not in headers.current
        with anyio.fail_after(10):
            moved = await headers.__anext__()
        assert isinstance(moved, HeadersMoved)
        assert (moved.old_server, moved.new_server) == (victim, spare)
        assert {u.url for u in headers.servers} == {kept, spare}

        before = server_stats(pool, victim)["requests"]
        for _ in range(12):
            await pool.request("server.ping")
        assert server_stats(pool, victim)["requests"] == before
        with pytest.raises(ConnectionLost):
            await pool.request_on(victim, "server.ping")

        # Not reconnected during the ban (the checks above ran within it); back, and
        # usable, once it ends.
        assert server_stats(pool, victim)["state"] == "banned"
        assert server_stats(pool, victim)["connects"] == 1
        await wait_state(pool, victim, "connected")
        stats = server_stats(pool, victim)
        assert (stats["ban_reason"], stats["connects"]) == (None, 2)
        assert await pool.request_on(victim, "server.ping") is None


async def test_ban_moves_scripthash_subscriptions(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
) -> None:
    urls = [s.tcp_url for s in electrumx_servers[:2]]
    address = regtest_node.new_address()
    async with ServerPool(urls, network="regtest") as pool, \
            pool.subscribe_scripthashes() as subs:
        await pool.request("server.ping")
        await pool.request("server.ping")  # both servers open
        scripthash = pool.scripthash(address)
        assert await subs.add_addresses([address]) == {scripthash: None}
        carrier = subs.carrier(scripthash)
        assert carrier is not None
        pool.ban(carrier, "test")
        assert server_stats(pool, carrier)["state"] == "banned"
        with anyio.fail_after(10):
            moved = await subs.__anext__()
        assert isinstance(moved, Moved)
        (other,) = set(urls) - {carrier}
        assert (moved.old_server, moved.new_server, moved.statuses) == (
            carrier, other, {scripthash: None})
        await anyio.to_thread.run_sync(regtest_node.pay, address, 7_000)
        with anyio.fail_after(10):
            note = await subs.__anext__()
        assert isinstance(note, StatusNotification) and note.server == other


async def test_request_on_asks_the_named_server_only(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    urls = [s.tcp_url for s in electrumx_servers]
    async with ServerPool(urls, network="regtest", burst=3) as pool:
        async with pool.subscribe_headers(servers=3):
            pass  # opens all three
        target = urls[2]
        before = {s["url"]: s["requests"] for s in pool.stats()["servers"]}
        result = await pool.request_on(target, "blockchain.block.headers", 0, 2)
        assert result["count"] == 2 and len(result["headers"]) == 2  # protocol 1.6's form
        after = {s["url"]: s["requests"] for s in pool.stats()["servers"]}
        assert {u: after[u] - before[u] for u in urls} == {urls[0]: 0, urls[1]: 0, target: 1}
        with pytest.raises(ValueError, match="not a configured server"):
            await pool.request_on("tcp://127.0.0.1:1", "server.ping")
        with pytest.raises(ValueError, match="not a configured server"):
            pool.ban("tcp://127.0.0.1:1", "x")


async def test_a_server_behind_the_majority_is_labelled_lagging(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
) -> None:
    height = regtest_node.height
    async with FakeElectrum(regtest_node.header, tip=height - 5) as fake:
        urls: Sequence[str] = [*(s.tcp_url for s in electrumx_servers[:2]), fake.url]
        async with ServerPool(urls, network="regtest") as pool, \
                pool.subscribe_headers(servers=3):
            assert server_stats(pool, fake.url)["state"] == "connected"
            # The lag rule runs on tip notifications.
            await anyio.to_thread.run_sync(regtest_node.mine)
            await wait_state(pool, fake.url, "lagging")
            assert {server_stats(pool, u)["state"] for u in urls[:2]} == {"connected"}
            # Caught up: no longer lagging at its next notification.
            await fake.announce(height + 1, regtest_node.header(height + 1))
            await wait_state(pool, fake.url, "connected")
