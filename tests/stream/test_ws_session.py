"""The WebSocket session as a pure state machine: frames and outcomes in, actions out,
no socket and no clock. The close codes, messages and limits are the wire contract
(``test_streaming_e2e.py`` checks the same ones over a real socket)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import anyio
import orjson
import pytest
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from batcher.events import EVENT_TYPES
from stream.fanout.filters import ClientFilter
from stream.fanout.hub import DisconnectReason, Hub, HubClosed
from stream.services import Limits, Services
from stream.transports.ws import PeerGone, _Connection
from stream.transports.ws_session import (
    Close,
    End,
    Send,
    SessionLimits,
    SetFilter,
    StartStream,
    Watch,
    WsSession,
    WsState,
)

ALICE, BOB, CAROL = "bcrt1qalice", "bcrt1qbob", "bcrt1qcarol"


def canonical(address: str) -> str:
    if not address.startswith("bcrt1q"):
        raise ValueError(f"not a regtest address: {address[:20]!r}")
    return address


def session(**limits: int) -> WsSession:
    return WsSession(SessionLimits(**limits), canonical)


def frame(**message: Any) -> str:
    return orjson.dumps(message).decode()


def subscribed(types: list[str] | None = None, addresses: list[str] | None = None,
               min_sats: int = 0) -> Send:
    return Send({"op": "subscribed", "types": types, "addresses": addresses,
                 "min_sats": min_sats})


def test_hello_names_the_limits() -> None:
    [hello] = session(max_addresses=3, max_message_bytes=99).hello(
        version="1.2", epoch="e", last_seq=41, network="regtest")
    assert hello == Send({"op": "hello", "version": "1.2", "epoch": "e", "last_seq": 41,
                          "network": "regtest",
                          "limits": {"max_addresses": 3, "max_message_bytes": 99}})


def test_the_first_subscribe_starts_the_stream_and_a_later_one_changes_its_filter() -> None:
    ws = session()
    assert ws.state is WsState.OPEN
    assert ws.receive(frame(op="subscribe", types=["block"])) == [
        subscribed(["block"]), StartStream(ClientFilter(frozenset({"block"})), None, None)]
    assert ws.state is WsState.STREAMING
    assert ws.receive(frame(op="subscribe", types=["fees"], min_sats=5)) == [
        subscribed(["block", "fees"], min_sats=5),
        SetFilter(ClientFilter(frozenset({"block", "fees"}), None, 5))]
    # A resume point restarts the stream from there, with the interest so far.
    assert ws.receive(frame(op="subscribe", resume_from=7, epoch="old")) == [
        subscribed(["block", "fees"], min_sats=5),
        StartStream(ClientFilter(frozenset({"block", "fees"}), None, 5), 7, "old")]


def test_a_subscription_takes_effect_only_once_its_addresses_are_watched() -> None:
    ws = session()
    assert ws.receive(frame(op="subscribe", addresses=[ALICE, BOB, ALICE])) == [
        Watch((ALICE, BOB))]
    assert ws.interest.addresses is None  # not yet
    assert ws.watched() == [
        subscribed(None, [ALICE, BOB]),
        StartStream(ClientFilter(None, frozenset({ALICE, BOB})), None, None)]
    assert ws.receive(frame(op="subscribe", addresses=[CAROL])) == [Watch((CAROL,))]
    assert ws.watch_failed() == [Send({
        "op": "error", "code": "unavailable",
        "message": "the store is unavailable; try again shortly"})]
    assert ws.interest.addresses == {ALICE, BOB}
    assert ws.errors == 0  # the store's fault, not the client's


def test_more_addresses_than_the_limit_is_an_error_and_changes_nothing() -> None:
    ws = session(max_addresses=2)
    ws.receive(frame(op="subscribe", addresses=[ALICE]))
    ws.watched()
    assert ws.receive(frame(op="subscribe", addresses=[BOB, CAROL])) == [Send({
        "op": "error", "code": "limit_exceeded",
        "message": "at most 2 addresses per connection"})]
    assert ws.errors == 1 and ws.interest.addresses == {ALICE}
    assert ws.receive(frame(op="subscribe", addresses=[ALICE, BOB])) == [Watch((ALICE, BOB))]


def test_unsubscribing_narrows_and_the_last_address_means_none() -> None:
    ws = session()
    assert ws.receive(frame(op="unsubscribe", types=["fees"])) == [
        subscribed(sorted(EVENT_TYPES - {"fees"}))]  # nothing streams yet: no filter
    ws.receive(frame(op="subscribe", addresses=[ALICE]))
    ws.watched()
    assert ws.receive(frame(op="unsubscribe", types=["block"], addresses=[ALICE])) == [
        subscribed(sorted(EVENT_TYPES - {"fees", "block"}), []),
        SetFilter(ClientFilter(frozenset(EVENT_TYPES - {"fees", "block"}), frozenset()))]


def test_protocol_errors_are_answered_until_there_are_too_many() -> None:
    ws = session(max_errors=3)
    assert ws.receive("{nope") == [Send({"op": "error", "code": "bad_json",
                                         "message": "message is not valid JSON"})]
    assert ws.receive(frame(op="ping")) == [Send({"op": "pong"})]
    [error] = ws.receive(frame(op="subscribe", addresses=["bc1qmainnet"]))
    assert isinstance(error, Send) and error.message["code"] == "invalid_address"
    assert ws.reading
    third = ws.receive(frame(op="dance"))
    assert [type(a) for a in third] == [Send, Close]
    assert third[1] == Close(1008, "too many errors")
    assert ws.state is WsState.CLOSING and not ws.reading
    assert ws.receive(frame(op="ping")) == []  # closing: nothing more is answered


def test_a_frame_over_the_size_limit_closes_with_1009() -> None:
    ws = session(max_message_bytes=8)
    assert ws.receive(b"12345678") != []  # at the limit: parsed (and refused as JSON)
    assert ws.receive("é" * 5) == [Close(1009, "message over 8 bytes")]  # 10 bytes
    assert ws.state is WsState.CLOSING


@pytest.mark.parametrize(("reason", "expected"), [
    (DisconnectReason.SLOW_CLIENT, [Close(4008, "slow client; resume_from=12"), End()]),
    (DisconnectReason.SHUTDOWN, [Close(1001, "server shutting down"), End()]),
    (DisconnectReason.CLIENT_GONE, [End()]),
    (None, [End()]),
])
def test_the_end_of_a_stream_says_why_and_where_to_resume(
    reason: DisconnectReason | None, expected: list[object],
) -> None:
    ws = session()
    ws.receive(frame(op="subscribe"))
    assert ws.stream_ended(reason, 12) == expected


def test_one_close_frame_per_connection_whatever_ends_it() -> None:
    ws = session()
    ws.receive(frame(op="subscribe"))
    assert ws.stream_failed(7) == [Close(1011, "store unavailable; resume_from=7")]
    assert ws.shutdown() == [End()]
    assert ws.stream_ended(DisconnectReason.SLOW_CLIENT, 9) == [End()]
    refused = session()
    assert refused.stream_refused() == [Close(1001, "server shutting down")]
    assert refused.shutdown() == [End()]


def test_a_gone_or_stuck_peer_gets_no_goodbye() -> None:
    gone = session()
    assert gone.peer_gone() == [] and gone.state is WsState.CLOSED
    assert gone.shutdown() == [End()]
    stuck = session()
    assert stuck.send_stalled() == [End()] and stuck.state is WsState.CLOSED
    pending = session()
    pending.receive(frame(op="subscribe", addresses=[ALICE]))
    pending.peer_gone()
    assert pending.watched() == [] and pending.watch_failed() == []


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_errors must be at least 1, got 0"):
        SessionLimits(max_errors=0)
    with pytest.raises(ValueError, match="max_addresses must be >= 0, got -1"):
        SessionLimits(max_addresses=-1)


class FakeSocket:
    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.client = None

    async def send_text(self, text: str) -> None:
        raise self.error

    async def close(self, code: int, reason: str) -> None:
        raise self.error


def connection(error: BaseException) -> _Connection:
    services = SimpleNamespace(limits=Limits(), hub=Hub(), canonical_address=canonical)
    return _Connection(cast(WebSocket, FakeSocket(error)), cast(Services, services))


@pytest.mark.anyio
@pytest.mark.parametrize("gone", [WebSocketDisconnect(1006), WebSocketDisconnected("closed")])
async def test_a_gone_peer_is_its_own_type_at_the_transport(gone: Exception) -> None:
    with pytest.raises(PeerGone):
        await connection(gone).send_texts(["hi"])
    await connection(gone).close(1001, "server shutting down")  # already gone: quiet


@pytest.mark.anyio
async def test_a_misuse_runtime_error_is_not_taken_for_a_gone_peer() -> None:
    misuse = RuntimeError('Expected ASGI message "websocket.send", but got ...')
    with pytest.raises(RuntimeError, match="Expected ASGI message"):
        await connection(misuse).send_texts(["hi"])
    with pytest.raises(RuntimeError, match="Expected ASGI message"):
        await connection(misuse).close(1000, "")


def test_a_closed_hub_raises_its_own_type_not_a_runtime_error() -> None:
    hub = Hub()
    hub.close()
    with pytest.raises(HubClosed, match="cannot subscribe to a closed hub") as raised:
        hub.subscribe("ws", ClientFilter())
    assert not isinstance(raised.value, RuntimeError)


class LeavingSocket:
    """Says hello fine, then is gone at the first reply: the client left right after its
    ping (a real race, made deterministic)."""

    client = None

    def __init__(self) -> None:
        self.sent = 0

    async def send_text(self, text: str) -> None:
        self.sent += 1
        if self.sent > 1:
            raise WebSocketDisconnect(1006)

    async def receive(self) -> dict[str, str]:
        return {"type": "websocket.receive", "text": '{"op": "ping"}'}

    async def close(self, code: int, reason: str) -> None:
        raise WebSocketDisconnect(1006)


@pytest.mark.anyio
async def test_a_peer_gone_inside_the_connections_tasks_ends_it_quietly() -> None:
    async def last_seq() -> int:
        return 0

    services = SimpleNamespace(
        limits=Limits(), hub=Hub(), canonical_address=canonical,
        batches=SimpleNamespace(epoch="e", last_seq=last_seq),
        settings=SimpleNamespace(network="regtest"), shutting_down=anyio.Event())
    socket = LeavingSocket()
    connection = _Connection(cast(WebSocket, socket), cast(Services, services))
    with anyio.fail_after(5):
        await connection.run()  # no ExceptionGroup escapes to uvicorn
    assert socket.sent == 2
    assert connection.session.state is WsState.CLOSED
