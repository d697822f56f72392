"""The hub and client filters, driven synchronously: no sockets, no clock."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sse_starlette import ServerSentEvent

from batcher.events import Batch, Event
from stream.fanout.filters import ClientFilter, FilterError
from stream.fanout.hub import DisconnectReason, Hub, HubClosed, Message, Subscriber

ALICE, BOB = "bcrt1qalice", "bcrt1qbob"


def address_event(address: str, received: int, txid: str = "aa" * 32) -> Event:
    data = {"address": address, "txid": txid, "height": 0, "status": "mempool",
            "received_sats": received, "sent_sats": 0, "confirmations": 0}
    return Event("address", address, data, ts=1_700_000_000.0)


def large_tx(total: int, to: str) -> Event:
    data = {"txid": "bb" * 32, "height": 0, "total_out_sats": total,
            "outputs": [{"address": to, "value_sats": total}]}
    return Event("tx.large", "bb" * 32, data, ts=1_700_000_000.0)


def batch(seq: int, *events: Event) -> Batch:
    return Batch(seq, "epoch-1", events[0].type, events, ts=1_700_000_000.5)


def block(seq: int) -> Batch:
    event = Event("block", str(100 + seq), {"height": 100 + seq, "hash": "cc" * 32}, 1.0)
    return Batch(seq, "epoch-1", "block", (event,), 1.0)


def test_address_filter_keeps_seq_and_counts_what_it_carries() -> None:
    three = batch(7, address_event(ALICE, 10), address_event(BOB, 20), address_event(ALICE, 30))
    only_alice = ClientFilter.build(addresses=[ALICE]).apply(three)
    assert only_alice is not None
    assert only_alice.seq == 7 and only_alice.count == 2
    assert [e.data["received_sats"] for e in only_alice.events] == [10, 30]


def test_min_sats_narrows_address_and_large_tx_but_not_blocks() -> None:
    rich = ClientFilter.build(min_sats=25)
    kept = rich.apply(batch(1, address_event(ALICE, 10), address_event(BOB, 30)))
    assert kept is not None and [e.key for e in kept.events] == [BOB]
    assert rich.apply(batch(2, large_tx(20, ALICE))) is None
    blocks = block(3)
    assert rich.apply(blocks) is blocks


def test_type_filter_and_address_filter_on_large_transactions() -> None:
    watcher = ClientFilter.build(types=["tx.large"], addresses=[BOB])
    assert watcher.apply(block(1)) is None
    assert watcher.apply(batch(2, large_tx(5, ALICE))) is None
    assert watcher.apply(batch(3, large_tx(5, BOB))) is not None


def test_unknown_type_and_negative_min_sats_are_refused() -> None:
    with pytest.raises(FilterError, match="unknown event type 'blocks'"):
        ClientFilter.build(types=["blocks"])
    with pytest.raises(FilterError, match="min_sats"):
        ClientFilter.build(min_sats=-1)


def test_ws_text_is_the_batch_with_an_op() -> None:
    message = Message.encode(block(5))
    assert orjson.loads(message.ws_text) == {"op": "batch", **orjson.loads(message.payload)}


@given(seq=st.integers(1, 2**53), address=st.text(), status=st.text())
def test_the_pre_encoded_sse_frame_is_what_sse_starlette_would_send(
    seq: int, address: str, status: str
) -> None:
    # Any text in the data (newlines, CR, U+2028, quotes) must still make one data: line
    # that EventSource parses back to the batch.
    event = Event("address", address, {"address": address, "status": status}, 1.0)
    message = Message.encode(Batch(seq, "epoch-1", "address", (event,), 1.0))
    expected = ServerSentEvent(data=message.payload.decode(), event="address", id=str(seq))
    assert message.sse_frame == expected.encode()
    assert message.sse_frame.count(b"\ndata: ") == 1


@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    """Hubs made by a test; every subscriber is closed afterwards, as transports do."""
    made: list[Hub] = []
    yield made
    for hub in made:
        hub.close()
        for subscriber in hub.subscribers():
            subscriber.close()


@pytest.mark.anyio
async def test_each_distinct_filter_is_encoded_once_per_batch(hubs: list[Hub]) -> None:
    hub = Hub(buffer_size=10)
    hubs.append(hub)
    everyone = [hub.subscribe("ws", ClientFilter()) for _ in range(50)]
    alice_fans = [hub.subscribe("sse", ClientFilter.build(addresses=[ALICE])) for _ in range(50)]
    hub.publish(batch(1, address_event(ALICE, 1), address_event(BOB, 2)))
    assert hub.encodes == 2
    assert hub.deliveries == {"ws": 50, "sse": 50}
    with anyio.fail_after(1):
        async for message in everyone[0]:
            assert message.count == 2
            break
        async for message in alice_fans[0]:
            assert message.count == 1
            break


@pytest.mark.anyio
async def test_a_slow_client_is_cut_without_slowing_the_others(hubs: list[Hub]) -> None:
    hub = Hub(buffer_size=3)
    hubs.append(hub)
    slow = hub.subscribe("ws", ClientFilter())
    fast = hub.subscribe("ws", ClientFilter())
    received: list[int] = []
    for seq in range(1, 6):
        hub.publish(block(seq))
        async for message in fast:  # the fast client keeps up
            received.append(message.seq)
            break
    assert received == [1, 2, 3, 4, 5]
    assert slow.reason is DisconnectReason.SLOW_CLIENT
    assert [m.seq async for m in slow] == []  # cut at once; replay brings the rest back
    slow.close()
    assert hub.stats()["disconnects"] == {"ws:slow_client": 1}


@pytest.mark.anyio
async def test_closing_the_hub_ends_every_stream_and_later_batches_wait_for_replay(
    hubs: list[Hub],
) -> None:
    hub = Hub()
    hubs.append(hub)
    subscriber = hub.subscribe("sse", ClientFilter())
    hub.publish(block(1))
    hub.close()
    assert [m.seq async for m in subscriber] == [1]
    assert subscriber.reason is DisconnectReason.SHUTDOWN
    hub.publish(block(2))  # the batcher drains after the streams ended: never raises
    assert hub.last_seq == 2 and hub.deliveries == {"sse": 1}
    with pytest.raises(HubClosed, match="cannot subscribe to a closed hub"):
        hub.subscribe("ws", ClientFilter())


@pytest.mark.anyio
async def test_a_client_that_waited_gets_everything_buffered_in_one_receive(
    hubs: list[Hub],
) -> None:
    hub = Hub(buffer_size=10)
    hubs.append(hub)
    subscriber = hub.subscribe("ws", ClientFilter())
    for seq in range(1, 8):
        hub.publish(block(seq))
    with anyio.fail_after(1):
        assert [m.seq for m in await subscriber.receive(max_messages=5)] == [1, 2, 3, 4, 5]
        assert [m.seq for m in await subscriber.receive()] == [6, 7]


@pytest.mark.anyio
async def test_a_waiting_client_is_woken_by_a_publish_and_by_a_cut(hubs: list[Hub]) -> None:
    hub = Hub(buffer_size=2)
    hubs.append(hub)
    subscriber = hub.subscribe("sse", ClientFilter())
    received: list[list[int]] = []

    async def client() -> None:
        while messages := await subscriber.receive():
            received.append([m.seq for m in messages])

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client)
            await anyio.wait_all_tasks_blocked()
            hub.publish(block(1))
            await anyio.wait_all_tasks_blocked()
            for seq in (2, 3, 4):  # the client is not scheduled in between: overflow
                hub.publish(block(seq))
    assert received == [[1]]
    assert subscriber.reason is DisconnectReason.SLOW_CLIENT



@pytest.mark.anyio
async def test_a_changed_filter_moves_the_client_to_its_new_group(hubs: list[Hub]) -> None:
    hub = Hub(buffer_size=10)
    hubs.append(hub)
    blocks_only = ClientFilter.build(types=["block"])
    mover = hub.subscribe("ws", blocks_only)
    stayer = hub.subscribe("ws", blocks_only)
    mover.set_filter(ClientFilter.build(types=["address"], addresses=[ALICE]))
    assert hub.stats()["filters"] == 2
    hub.publish(block(1))
    hub.publish(batch(2, address_event(ALICE, 5), address_event(BOB, 6)))
    with anyio.fail_after(1):
        assert [(m.seq, m.count) for m in await mover.receive()] == [(2, 1)]
        assert [m.seq for m in await stayer.receive()] == [1]
    stayer.close()
    assert hub.stats()["filters"] == 1
    assert hub.deliveries == {"ws": 2}  # a client that left still counts


@pytest.mark.anyio
async def test_an_idle_waiter_is_woken_by_a_cut_and_by_shutdown(hubs: list[Hub]) -> None:
    hub = Hub(buffer_size=2)
    hubs.append(hub)
    cut = hub.subscribe("ws", ClientFilter())
    closed = hub.subscribe("sse", ClientFilter.build(types=["fees"]))
    results: dict[str, list[Message]] = {}

    async def wait(name: str, subscriber: Subscriber) -> None:
        results[name] = await subscriber.receive()

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "cut", cut)
            tg.start_soon(wait, "closed", closed)
            await anyio.wait_all_tasks_blocked()
            cut._end(DisconnectReason.SLOW_CLIENT)  # as a failing filter does
            hub.close()
    assert results == {"cut": [], "closed": []}


@pytest.mark.anyio
async def test_a_receive_cancelled_while_waiting_leaves_the_subscriber_usable(
    hubs: list[Hub],
) -> None:
    hub = Hub(buffer_size=3)
    hubs.append(hub)
    subscriber = hub.subscribe("ws", ClientFilter())
    with anyio.move_on_after(0.05) as waited:  # a feed restarted, a handler cancelled...
        await subscriber.receive()
    assert waited.cancelled_caught
    hub.publish(block(1))  # wakes nobody: the cancelled wait is not woken twice
    hub.publish(block(2))
    with anyio.fail_after(1):
        assert [m.seq for m in await subscriber.receive(max_messages=1)] == [1]
        assert [m.seq for m in await subscriber.receive()] == [2]
