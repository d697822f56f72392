"""ServerEvents: the pure diff over every state label, then a real server leaving and coming
back."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import pytest

from batcher.events import Event
from stream.electrum import ServerPool
from stream.producers.server_events import ServerEvents, server_changes
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.producers.support import CollectingSink, wait_until

A = "tcp://127.0.0.1:50001"
B = "ssl://127.0.0.1:50002"


def snap(url: str, state: str, height: int | None = 100,
         latency_ms: float | None = 12.5) -> dict[str, Any]:
    return {"url": url, "state": state, "height": height, "latency_ms": latency_ms,
            "in_flight": 0}


def states(events: Sequence[Event]) -> list[tuple[str, str, str | None]]:
    return [(e.key, e.data["state"], e.data["previous"]) for e in events]


def run_states(*rounds: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str | None]]:
    """Feed successive stats snapshots through the diff; every event's (url, state, prev)."""
    reported: dict[str, str] = {}
    out = []
    for servers in rounds:
        events, reported = server_changes(reported, servers, ts=1.0)
        out.extend(states(events))
    return out


# -- pure ------------------------------------------------------------------------------------


def test_idle_servers_and_connecting_produce_nothing() -> None:
    assert run_states([snap(A, "idle"), snap(B, "idle")], [snap(A, "connecting")]) == []


def test_joined_left_and_joined_again() -> None:
    assert run_states(
        [snap(A, "connecting")], [snap(A, "connected")], [snap(A, "backoff")],
        [snap(A, "connecting")], [snap(A, "backoff")], [snap(A, "connecting")],
        [snap(A, "connected")],
    ) == [(A, "connected", None), (A, "backoff", "connected"), (A, "connected", "backoff")]


def test_a_server_that_never_connects_is_one_backoff_event_not_a_flap() -> None:
    rounds = [[snap(B, s)] for s in ["connecting", "backoff"] * 5]
    assert run_states(*rounds) == [(B, "backoff", None)]


def test_lagging_and_banned_are_reported_as_they_come() -> None:
    assert run_states(
        [snap(A, "connected"), snap(B, "connected")],
        [snap(A, "lagging"), snap(B, "connected")],
        [snap(A, "connected"), snap(B, "banned")],
        [snap(A, "closed"), snap(B, "closed")],
    ) == [
        (A, "connected", None), (B, "connected", None),
        (A, "lagging", "connected"),
        (A, "connected", "lagging"), (B, "banned", "connected"),
        (A, "closed", "connected"), (B, "closed", "banned"),
    ]


def test_a_label_the_pool_does_not_have_yet_is_reported_too() -> None:
    assert run_states([snap(A, "connected")], [snap(A, "syncing")]) == [
        (A, "connected", None), (A, "syncing", "connected"),
    ]


def test_a_missed_flap_within_one_poll_is_no_event() -> None:
    # connected -> backoff -> connecting -> connected between two polls: nothing seen.
    assert run_states([snap(A, "connected")], [snap(A, "connected")]) == [(A, "connected", None)]


def test_event_data_and_what_the_diff_returns() -> None:
    events, reported = server_changes(
        {A: "connected"},
        [snap(A, "backoff", height=205, latency_ms=None), {"url": B}, {"state": "x"}],
        ts=1234.5,
    )
    (event,) = events
    assert (event.type, event.key, event.ts) == ("server", A, 1234.5)
    assert event.data == {"host": A, "state": "backoff", "previous": "connected",
                          "height": 205, "latency_ms": None, "reason": None}
    assert reported == {A: "backoff"}
    (event,), _ = server_changes(
        reported, [{**snap(A, "banned"), "ban_reason": "bad header"}], ts=1.0)
    assert (event.data["state"], event.data["reason"]) == ("banned", "bad header")


# -- against the bed ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_server_leaving_and_coming_back_is_two_events(
    regtest_node: RegtestNode, start_electrumx: Callable[..., ElectrumXServer],
) -> None:
    server = start_electrumx()  # our own: stopping it disturbs no other test
    url = server.tcp_url
    sink = CollectingSink()
    async with ServerPool([url], network="regtest", backoff_base=0.1, backoff_max=0.5,
                          connect_timeout=2.0) as pool, anyio.create_task_group() as tg:
        producer = ServerEvents(pool, sink, poll_seconds=0.05)
        await tg.start(producer.run)
        await wait_until(lambda: producer.polls >= 3, 30.0)
        assert sink.events == []  # configured but never opened

        await pool.request("server.ping")
        await wait_until(lambda: len(sink.events) == 1, 30.0)
        joined = sink.events[0].data
        assert (joined["host"], joined["state"], joined["previous"]) == (url, "connected", None)
        assert joined["height"] == regtest_node.height

        await anyio.to_thread.run_sync(server.stop)
        await wait_until(lambda: len(sink.events) == 2, 30.0)
        assert states(sink.events[1:]) == [(url, "backoff", "connected")]

        # While it is down the pool keeps trying: connecting / backoff, and no new event.
        def failures() -> int:
            return int(pool.stats()["servers"][0]["failures"])

        down_failures = failures()
        await wait_until(lambda: failures() >= down_failures + 2, 30.0)
        polls = producer.polls  # and the producer has looked since
        await wait_until(lambda: producer.polls >= polls + 2, 30.0)
        assert len(sink.events) == 2

        await anyio.to_thread.run_sync(server.start)  # same ports, same DB
        await wait_until(lambda: len(sink.events) == 3, 30.0)
        assert states(sink.events[2:]) == [(url, "connected", "backoff")]
        tg.cancel_scope.cancel()
