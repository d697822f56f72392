"""Running a batch on in-memory servers (no sockets): order, de-duplication, retries, and a
loud failure instead of a placeholder when the plan loses a call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from stream.electrum import PoolConfig, ServerError, ServerThrottled
from stream.electrum import batches as batches_module
from stream.electrum.batches import send_batch
from stream.electrum.selection import ServerSet
from stream.electrum.upstream import Upstream
from tests.electrum.fakes import FakeSession, connected, echo, sent_calls

pytestmark = pytest.mark.anyio

CONFIG = PoolConfig(network="regtest")


def _open() -> None:
    pass


def server_set(*servers: Upstream) -> ServerSet:
    servers_ = ServerSet(servers, CONFIG, check_open=_open)
    servers_.active.extend(servers)  # already open: nothing to grow into
    return servers_


def session(upstream: Upstream) -> FakeSession:
    assert isinstance(upstream.session, FakeSession)
    return upstream.session


async def test_results_come_back_in_order_with_duplicates_sent_once() -> None:
    a, b, c = (connected(f"tcp://127.0.0.1:{p}", CONFIG) for p in (1, 2, 3))
    calls = [("m", [i % 60]) for i in range(100)]
    assert await send_batch(server_set(a, b, c), calls) == [["m", i % 60] for i in range(100)]
    everything = sent_calls(a) + sent_calls(b) + sent_calls(c)
    assert sorted(p[0] for _, p in everything) == list(range(60))
    assert all(sent_calls(u) for u in (a, b, c))  # 60 unique calls, about 25 a server: all three


async def test_one_call_gets_its_result() -> None:
    a = connected("tcp://127.0.0.1:1", CONFIG)
    assert await send_batch(server_set(a), [("server.ping", [])]) == [["server.ping"]]
    assert await send_batch(server_set(a), []) == []


async def test_a_plan_that_loses_a_call_fails_loudly_not_with_a_placeholder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = batches_module.spread

    def loses_single_calls(count: int, servers: int, **kw: int) -> list[range]:
        return [] if count == 1 else real(count, servers, **kw)

    monkeypatch.setattr(batches_module, "spread", loses_single_calls)
    a = connected("tcp://127.0.0.1:1", CONFIG)
    with pytest.raises(RuntimeError, match="got no result"):
        await send_batch(server_set(a), [("server.ping", []), ("server.ping", [])])
    assert await send_batch(server_set(a), [("m", [1]), ("m", [2])]) == [["m", 1], ["m", 2]]


async def test_throttled_calls_move_to_another_server_and_the_first_is_backed_off() -> None:
    def throttles(method: str, params: Sequence[Any]) -> Any:
        return ServerThrottled("tcp://127.0.0.1:1", "excessive resource usage")

    a = connected("tcp://127.0.0.1:1", CONFIG, throttles)
    b = connected("tcp://127.0.0.1:2", CONFIG)
    b.in_flight = 5  # a is less loaded: tried first
    result = await send_batch(server_set(a, b), [("m", [i]) for i in range(3)])
    assert result == [["m", 0], ["m", 1], ["m", 2]]
    assert len(sent_calls(a)) == 3 and len(sent_calls(b)) == 3
    assert a.backoff_until > 0 and b.backoff_until == 0


async def test_an_answer_too_large_is_asked_again_in_halves() -> None:
    class SmallSends(FakeSession):
        async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], *,
                        time_limit: float) -> list[Any]:
            self.batches.append(list(calls))
            if len(calls) > 2:
                return [ServerError(-32600, "response too large") for _ in calls]
            return [echo(m, p) for m, p in calls]

    a = connected("tcp://127.0.0.1:1", CONFIG)
    a.session = SmallSends()  # type: ignore[assignment]
    result = await send_batch(server_set(a), [("m", [i]) for i in range(8)])
    assert result == [["m", i] for i in range(8)]
    assert [len(batch) for batch in session(a).batches] == [8, 4, 2, 2, 4, 2, 2]


async def test_a_per_call_error_stays_with_its_call() -> None:
    def unknown_two(method: str, params: Sequence[Any]) -> Any:
        return ServerError(2, "no such transaction") if params == [2] else params[0]

    a = connected("tcp://127.0.0.1:1", CONFIG, unknown_two)
    result = await send_batch(server_set(a), [("m", [1]), ("m", [2]), ("m", [3])])
    assert result == [1, ServerError(2, "no such transaction"), 3]


async def test_servers_lost_while_choosing_them_still_get_the_batch_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = connected("tcp://127.0.0.1:1", CONFIG)

    async def none_left(servers: ServerSet, count: int) -> list[Upstream]:
        return []  # the only usable server dropped during the spread wait

    monkeypatch.setattr(batches_module, "_servers_for_batch", none_left)
    calls = [("m", [i]) for i in range(30)]
    assert await send_batch(server_set(a), calls) == [["m", i] for i in range(30)]
