"""The subscription registry on a fake ``PoolHost`` (no pool, no sockets): the lag rule,
placement, and moving subscriptions off a server that went."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from stream.electrum import (
    Moved,
    PoolConfig,
    ScripthashSubscription,
    ServerState,
    ServerStatus,
)
from stream.electrum.host import PoolHost
from stream.electrum.subscriptions import Subscriptions
from stream.electrum.upstream import HEADERS_METHOD
from tests.electrum.fakes import FakeHost, connected, sent_calls

pytestmark = pytest.mark.anyio

CONFIG = PoolConfig(network="regtest", max_lag_blocks=1)
SH = [f"{i:02x}" * 32 for i in range(6)]


def status_of(method: str, params: Sequence[Any]) -> Any:
    return f"status-{params[0][:4]}" if method.endswith(".subscribe") else None


def three_servers(*heights: int) -> tuple[FakeHost, Subscriptions]:
    servers = [connected(f"tcp://127.0.0.1:{i + 1}", CONFIG, status_of, height=h)
               for i, h in enumerate(heights)]
    host = FakeHost(servers, CONFIG)
    typed: PoolHost = host  # the fake is a PoolHost: the registry asks nothing else
    return host, Subscriptions(typed)


async def test_a_server_behind_the_majority_is_lagging_and_carries_nothing() -> None:
    host, subs = three_servers(100, 100, 97)
    a, b, behind = host.servers
    subs.on_notification(a, HEADERS_METHOD, [{"height": 100, "hex": ""}])
    assert subs.is_lagging(behind) and not subs.is_lagging(a)
    assert behind not in subs.candidates()
    assert behind.snapshot(anyio.current_time(), lagging=subs.is_lagging(behind)).state is (
        ServerStatus.LAGGING)
    async with ScripthashSubscription(subs, 100) as sub:
        statuses = await sub.add(SH)
        assert statuses == {sh: f"status-{sh[:4]}" for sh in SH}
        assert {sub.carrier(sh) for sh in SH} == {a.url, b.url}  # spread, never on `behind`
        assert host.grown == len(SH)
        assert subs.figures().scripthashes == len(SH)
    assert subs.figures().scripthashes == 0  # leaving unsubscribes
    assert {p[0] for m, p in sent_calls(a) + sent_calls(b) if m.endswith("unsubscribe")} == (
        set(SH))
    # Caught up: no longer lagging at the next tip.
    behind.tip_height = 100
    subs.on_notification(behind, HEADERS_METHOD, [{"height": 100, "hex": ""}])
    assert not subs.is_lagging(behind)


async def test_subscriptions_move_off_a_server_that_went() -> None:
    host, subs = three_servers(100, 100, 100)
    async with anyio.create_task_group() as tg, ScripthashSubscription(subs, 100) as sub:
        tg.start_soon(subs.run_mover)
        await sub.add(SH[:3])
        gone = next(u for u in host.servers if u.url == sub.carrier(SH[0]))
        moving = {sh for sh in SH[:3] if sub.carrier(sh) == gone.url}
        gone.state = ServerState.BACKOFF  # its connection went
        subs.on_lost(gone)
        assert all(sub.carrier(sh) is None for sh in moving)
        assert subs.figures().moving == len(moving)
        with anyio.fail_after(5):
            moved = await sub.__anext__()
        assert isinstance(moved, Moved) and moved.old_server == gone.url
        assert moved.new_server != gone.url
        assert moved.statuses == {sh: f"status-{sh[:4]}" for sh in moving}
        assert all(sub.carrier(sh) == moved.new_server for sh in moving)
        assert subs.figures().moving == 0
        tg.cancel_scope.cancel()
