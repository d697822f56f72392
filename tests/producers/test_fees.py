"""FeeProducer: unit conversion (pure), then real estimates from the bed's node via ElectrumX."""

from __future__ import annotations

import anyio
import pytest

from stream.electrum import ServerError, ServerPool
from stream.producers.fees import FeeProducer, fees_data, sat_per_vbyte
from stream.producers.headers import BlockHeader, ChainHeader, Extended
from tests.bed.bed import TipWaiter
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.producers.support import CollectingSink, wait_until


def test_estimates_are_sat_per_vbyte_or_none() -> None:
    assert sat_per_vbyte(0.00025) == 25.0
    assert sat_per_vbyte(0.00001234) == 1.234
    assert sat_per_vbyte(0) == 0.0
    assert sat_per_vbyte(-1) is None  # "no estimate"
    for bad in (True, "0.1", None, float("nan")):
        with pytest.raises(ValueError):
            sat_per_vbyte(bad)


def test_fees_data_keys_targets_as_strings_and_keeps_the_histogram() -> None:
    data = fees_data([1, 6], [0.0002, -1, [[10.5, 1000], [2, 250000]]])
    assert data == {"estimates": {"1": 20.0, "6": None},
                    "histogram": [[10.5, 1000], [2, 250000]]}


@pytest.mark.parametrize("answers", [
    [0.0002, ServerError(1, "daemon error"), []],
    [0.0002, 0.0001, "histogram"],
    [0.0002, 0.0001, [[1.0]]],
    [0.0002, []],
])
def test_an_error_or_malformed_answer_is_no_fees_data(answers: list[object]) -> None:
    with pytest.raises(ValueError):
        fees_data([1, 6], answers)


@pytest.mark.anyio
async def test_a_new_estimate_is_one_new_event_after_a_block_and_never_a_duplicate(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
    wait_for_tip: TipWaiter,
) -> None:
    node = regtest_node
    node.set_fee_estimate({1: 20.0, 6: 8.0})
    try:
        node.mine()  # ElectrumX caches estimates per tip
        await wait_for_tip.wait_async()
        sink = CollectingSink()
        # One server: ElectrumX's cache is per server, and another server asked for the first
        # time at this tip would already answer the node's new figure.
        async with ServerPool([electrumx_servers[0].tcp_url], network="regtest") as pool, \
                anyio.create_task_group() as tg:
            producer = FeeProducer(pool, sink, poll_seconds=600, settle_seconds=0.1)
            await tg.start(producer.run)
            await wait_until(lambda: producer.emitted == 1)  # the check at start
            first = sink.events[0]
            assert (first.type, first.key) == ("fees", "fees")
            assert first.data["estimates"] == {
                "1": 20.0, "2": 20.0, "3": 20.0, "6": 8.0, "12": 8.0, "24": 8.0,
            }
            assert isinstance(first.data["histogram"], list)

            # The node's estimate changes, but the server answers its cached figure for this tip.
            node.set_fee_estimate({1: 30.5, 6: 12.25})
            await producer.check()
            assert len(sink.events) == 1

            node.mine()
            await wait_for_tip.wait_async()
            checks = producer.checks
            producer.on_chain(Extended((ChainHeader(node.height,
                                                    BlockHeader.parse(node.header(node.height))),)))
            await wait_until(lambda: producer.emitted == 2)
            assert sink.events[1].data["estimates"] == {
                "1": 30.5, "2": 30.5, "3": 30.5, "6": 12.25, "12": 12.25, "24": 12.25,
            }
            # The re-check after the change, and one more: same figures, no new event.
            await wait_until(lambda: producer.checks >= checks + 2)
            await producer.check()
            assert len(sink.events) == 2
            tg.cancel_scope.cancel()
    finally:
        node.set_fee_estimate(None)
