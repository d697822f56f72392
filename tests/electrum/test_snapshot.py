"""The typed snapshot: one labelling rule per server, one tip rule, and stats() as its dict."""

from __future__ import annotations

import pytest

from stream.electrum import (
    PoolConfig,
    PoolSnapshot,
    PoolState,
    ServerPool,
    ServerSnapshot,
    ServerState,
    ServerStatus,
    SubscriptionFigures,
)
from stream.electrum.states import server_status
from tests.electrum.fakes import connected

C = ServerState.CONNECTED


def test_status_values_are_the_labels_stats_always_showed() -> None:
    assert [s.value for s in ServerStatus] == [
        "idle", "connecting", "connected", "backoff", "lagging", "banned", "closed"]


@pytest.mark.parametrize(
    ("state", "banned", "backing_off", "lagging", "expected"),
    [
        (C, False, False, False, ServerStatus.CONNECTED),
        (C, False, False, True, ServerStatus.LAGGING),
        (C, False, True, True, ServerStatus.BACKOFF),  # backoff beats lagging
        (C, True, True, True, ServerStatus.BANNED),  # banned beats backoff
        (C, True, False, False, ServerStatus.BANNED),
        # The lag rule and a back-off label only a connected server.
        (ServerState.IDLE, False, False, True, ServerStatus.IDLE),
        (ServerState.CONNECTING, False, True, True, ServerStatus.CONNECTING),
        (ServerState.BACKOFF, False, True, True, ServerStatus.BACKOFF),
        # A ban outlives the connection; a closed pool's servers are closed.
        (ServerState.BACKOFF, True, True, False, ServerStatus.BANNED),
        (ServerState.IDLE, True, False, False, ServerStatus.BANNED),
        (ServerState.CLOSED, True, True, True, ServerStatus.CLOSED),
        (ServerState.CLOSED, False, False, False, ServerStatus.CLOSED),
    ],
)
def test_banned_beats_backoff_beats_lagging_beats_the_connection(
    state: ServerState, banned: bool, backing_off: bool, lagging: bool,
    expected: ServerStatus,
) -> None:
    assert server_status(state, banned=banned, backing_off=backing_off,
                         lagging=lagging) is expected


def test_an_upstream_snapshot_is_frozen_and_its_dict_is_the_stats_row() -> None:
    upstream = connected("tcp://127.0.0.1:1", PoolConfig(), height=812)
    upstream.latency = 0.04126
    upstream.ban("sent a header that does not link", until=20.0)
    snap = upstream.snapshot(10.0, lagging=True)
    assert (snap.state, snap.height, snap.latency_ms, snap.protocol) == (
        ServerStatus.BANNED, 812, 41.3, "1.4")
    assert (snap.ban_reason, snap.banned_s, snap.backoff_s) == (
        "sent a header that does not link", 10.0, 10.0)
    with pytest.raises(AttributeError):
        snap.state = ServerStatus.CONNECTED  # type: ignore[misc]
    assert upstream.stats(10.0, lagging=True) == snap.to_dict()
    assert list(snap.to_dict()) == [
        "url", "state", "in_flight", "requests", "failures", "latency_ms", "height",
        "connects", "backoff_s", "protocol", "ban_reason", "banned_s"]
    assert snap.to_dict()["state"] == "banned"
    after = upstream.snapshot(20.0, lagging=True)
    assert (after.state, after.ban_reason, after.banned_s) == (ServerStatus.LAGGING, None, 0.0)


def _server(url: str, state: ServerStatus, height: int | None) -> ServerSnapshot:
    return ServerSnapshot(url=url, state=state, in_flight=0, requests=0, failures=0,
                          latency_ms=None, height=height, connects=1, backoff_s=0.0,
                          protocol="1.4", ban_reason=None, banned_s=0.0)


def _pool(*servers: ServerSnapshot) -> PoolSnapshot:
    return PoolSnapshot(network="regtest", state=PoolState.OPEN, configured=len(servers),
                        size=len(servers), connected=len(servers), requests=0, in_flight=0,
                        subscriptions=SubscriptionFigures(0, 0, 0), servers=servers)


def test_servers_tip_is_the_lower_median_of_connected_servers_only() -> None:
    snap = _pool(
        _server("a", ServerStatus.CONNECTED, 101),
        _server("b", ServerStatus.CONNECTED, 100),
        _server("c", ServerStatus.CONNECTED, 99),
        _server("d", ServerStatus.LAGGING, 90),
        _server("e", ServerStatus.BANNED, 105),
        _server("f", ServerStatus.BACKOFF, 200),
        _server("g", ServerStatus.CONNECTED, None),
    )
    assert snap.servers_tip() == 100
    # Two servers: the lower one (one server ahead holds nothing up).
    assert _pool(_server("a", ServerStatus.CONNECTED, 102),
                 _server("b", ServerStatus.CONNECTED, 100)).servers_tip() == 100
    # The mode would say 7; the lower median says 8.
    assert _pool(*(_server(str(h), ServerStatus.CONNECTED, h)
                   for h in (7, 7, 8, 9, 10))).servers_tip() == 8
    assert _pool(_server("a", ServerStatus.CONNECTED, None)).servers_tip() is None
    assert _pool(_server("a", ServerStatus.LAGGING, 5)).servers_tip() is None
    assert _pool().servers_tip() is None


def test_stats_is_the_snapshot_as_a_dict() -> None:
    pool = ServerPool(["tcp://127.0.0.1:1", "ssl://127.0.0.1:2"], network="regtest")
    snap = pool.snapshot()
    assert (snap.state, snap.configured, snap.size, snap.requests) == (PoolState.NEW, 2, 0, 0)
    assert [s.state for s in snap.servers] == [ServerStatus.IDLE, ServerStatus.IDLE]
    assert pool.stats() == snap.to_dict()
    assert list(pool.stats()) == [
        "network", "state", "configured", "size", "connected", "requests", "in_flight",
        "subscriptions", "servers"]
    assert pool.stats()["subscriptions"] == {
        "scripthashes": 0, "moving": 0, "header_subscriptions": 0}
    assert pool.servers_tip() is None
