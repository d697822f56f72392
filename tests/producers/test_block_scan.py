"""BlockScanner: end-of-block detection and merkle check (pure), then real blocks on the bed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import anyio
import pytest
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from stream.electrum import NoServerAvailable, ServerError, ServerPool
from stream.producers.block_scan import (
    BlockScanner,
    ScanFailed,
    is_end_of_block,
    merkle_root,
    page_txids,
)
from stream.producers.headers import BlockHeader, ChainHeader, Extended, Reorg, Tip
from stream.producers.txparse import parse_tx
from tests.bed.bed import TipWaiter
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.producers.support import CollectingSink, chain_header, wait_until

TXID_A = "aa" * 32
TXID_B = "bb" * 32
# What ElectrumX 2.0 answers for a position past the last transaction (code 1, BAD_REQUEST).
ELECTRUMX_END = ServerError(1, "no tx at position 2 in block at height 105")





# -- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    "no tx at position 1,234 in block at height 5",  # ElectrumX
    "No transaction at position 1234 for height 5",  # Fulcrum
    "invalid tx_pos 1234 in block at height 5",  # electrs
])
def test_each_server_kinds_end_of_block_answer_is_recognized(message: str) -> None:
    assert is_end_of_block(ServerError(1, message))


def test_other_answers_are_not_the_end_of_a_block() -> None:
    assert not is_end_of_block(TXID_A)
    assert not is_end_of_block(ServerError(1, "db error: DBError('block 9 not on disk (>8)')"))
    assert not is_end_of_block(ServerError(-32600, "invalid request"))


def test_a_page_stops_at_the_first_end_of_block_answer() -> None:
    assert page_txids(0, [TXID_A, TXID_B]) == ([TXID_A, TXID_B], False)
    assert page_txids(100, [TXID_A, ELECTRUMX_END, TXID_B, ELECTRUMX_END]) == ([TXID_A], True)
    assert page_txids(7, [ELECTRUMX_END]) == ([], True)
    assert page_txids(0, [TXID_A.upper()]) == ([TXID_A], False)


@pytest.mark.parametrize("answers", [
    [TXID_A, ServerError(1, "db error: DBError('block 9 not on disk (>8)')")],  # lagging
    [TXID_A, "not a txid"],
    [TXID_A, None],
])
def test_any_other_error_fails_the_attempt_rather_than_ending_the_block(
    answers: list[object],
) -> None:
    with pytest.raises(ScanFailed):
        page_txids(0, answers)


def test_no_transaction_at_position_zero_is_a_server_without_the_block() -> None:
    # Fulcrum answers "no transaction at position 0" for a height it does not have yet.
    with pytest.raises(ScanFailed):
        page_txids(0, [ServerError(1, "No transaction at position 0 for height 9")])


def test_merkle_root_of_mainnet_block_100000() -> None:
    txids = [
        "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
        "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
        "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
        "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
    ]
    assert merkle_root(txids) == (
        "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
    )
    assert merkle_root(txids[:1]) == txids[0]
    # An odd level pairs its last hash with itself.
    assert merkle_root(txids[:3]) == merkle_root([*txids[:3], txids[2]])


def test_a_reorg_drops_queued_blocks_it_disconnected() -> None:
    def header(height: int, nonce: int) -> ChainHeader:
        raw = bytes(4) + bytes(32) + bytes(32) + bytes(4) + bytes.fromhex("ffff7f20") + \
            nonce.to_bytes(4, "little")
        return ChainHeader(height, BlockHeader.parse(raw))

    old5, old6, new6, new7 = header(5, 1), header(6, 2), header(6, 3), header(7, 4)
    scanner = BlockScanner(ServerPool(["tcp://127.0.0.1:9"], network="regtest"),
                           CollectingSink(), network="regtest", threshold_sats=1)
    scanner.on_chain(Extended((old5, old6)))
    scanner.on_chain(Reorg(5, Tip(6, old6.hash), Tip(7, new7.hash), (old6.hash,),
                           (new6, new7)))
    assert scanner.queued == (old5, new6, new7)


class ScriptedPool:
    """A stand-in pool serving one block, with failures injected by call number."""

    def __init__(self, height: int, raws: Sequence[str], failures: dict[int, object]) -> None:
        self.height = height
        self.raws = {Transaction.from_string(r).txid().hex(): r for r in raws}
        self.txids = list(self.raws)
        self.failures = failures  # call number -> exception to raise or "short" (end early)
        self.calls = 0

    async def batch(self, calls: Iterable[tuple[str, Sequence[Any]]]) -> list[Any]:
        self.calls += 1
        failure = self.failures.get(self.calls)
        if isinstance(failure, BaseException):
            raise failure
        last = 1 if failure == "short" else len(self.txids)  # a server short of the block
        out: list[Any] = []
        for _, (height, pos) in calls:
            assert height == self.height
            out.append(self.txids[pos] if pos < last else
                       ServerError(1, f"no tx at position {pos} in block at height {height}"))
        return out

    async def get_transactions_batch(self, txids: Iterable[str]) -> list[Any]:
        self.calls += 1
        failure = self.failures.get(self.calls)
        if isinstance(failure, BaseException):
            raise failure
        return [self.raws[t] for t in txids]


def fake_block(height: int, values: Sequence[int]) -> tuple[ChainHeader, list[str]]:
    raws = []
    for i, value in enumerate(values):
        tx = Transaction(vin=[TransactionInput(bytes([i + 1]) * 32, 0)],
                         vout=[TransactionOutput(value, Script(b"\x00\x14" + bytes(20)))])
        raws.append(tx.serialize().hex())
    txids = [Transaction.from_string(r).txid().hex() for r in raws]
    root = bytes.fromhex(merkle_root(txids))[::-1]
    raw_header = bytes(4) + bytes(32) + root + bytes(4) + bytes.fromhex("ffff7f20") + bytes(4)
    return ChainHeader(height, BlockHeader.parse(raw_header)), raws


@pytest.mark.anyio
@pytest.mark.parametrize(("failures", "calls"), [
    ({}, 6),  # 3 pages of 2 positions (the third ends the block), 3 slices of 2 transactions
    ({1: NoServerAvailable("every configured server failed")}, 7),  # first page
    ({2: NoServerAvailable("no Electrum server available")}, 8),  # second page
    ({1: "short"}, 7),  # a server ends the block early: the merkle root does not match
    # Calls 1-3 are the pages, 4 and 5 the first two slices of transactions: the retry
    # fetches from the failed slice on, and the first slice's large one is not sent twice.
    ({5: NoServerAvailable("no Electrum server available")}, 7),
], ids=["clean", "first-page-down", "second-page-down", "short-answer", "fetch-down"])
async def test_failures_retry_the_block_and_never_end_it_early(
    failures: dict[int, object], calls: int,
) -> None:
    values = [5, 700, 9, 700, 1]  # odd count: the merkle tree pairs the last with itself
    block, raws = fake_block(42, values)
    pool = ScriptedPool(42, raws, failures)
    sink = CollectingSink()
    scanner = BlockScanner(cast(ServerPool, pool), sink, network="regtest", threshold_sats=700,
                           page_size=2, max_page=2, slice_size=2, retry_delays=(0, 0))
    await scanner.scan(block)
    assert (scanner.scanned, scanner.skipped) == (1, 0)
    assert [e.key for e in sink.events] == [pool.txids[1], pool.txids[3]]
    assert [e.data["total_out_sats"] for e in sink.events] == [700, 700]
    assert pool.calls == calls


@pytest.mark.anyio
async def test_a_block_failing_every_attempt_is_skipped_and_the_next_one_scanned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    block, raws = fake_block(42, [1, 2])
    down = NoServerAvailable("every configured server failed")
    pool = ScriptedPool(42, raws, {1: down, 2: down, 3: down})
    scanner = BlockScanner(cast(ServerPool, pool), CollectingSink(), network="regtest",
                           threshold_sats=0, retry_delays=(0, 0))
    with caplog.at_level(logging.WARNING, logger="stream.producers.block_scan"):
        await scanner.scan(block)
        await scanner.scan(block)
    assert (scanner.scanned, scanner.skipped) == (1, 1)
    assert [r.levelname for r in caplog.records] == ["WARNING"]


# -- against the bed ---------------------------------------------------------------------------


def subsidy(height: int) -> int:
    return 50 * 100_000_000 >> (height // 150)  # regtest halves every 150 blocks


def mine_payments(node: RegtestNode, amounts: Sequence[int]) -> tuple[int, list[str]]:
    """A block holding exactly a coinbase and one payment per amount (their funding
    transaction is mined in the block before). Returns (height, payment txids)."""
    node.mine(5)  # mature coinbases, so the wallet can fund large amounts
    txids = node.make_many_txs(len(amounts), sats=list(amounts))
    (funding,) = {s.txid for s in parse_tx(node.raw_transaction(txids[0]).hex(), "regtest")
                  .spends}
    node.mine(1, txids=[funding])
    node.mine(1, txids=txids)
    height = node.height
    assert node.block_txids(height)[1:] == txids
    return height, txids


@pytest.mark.anyio
async def test_exactly_the_large_transactions_of_a_block_are_reported(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
    wait_for_tip: TipWaiter,
) -> None:
    node = regtest_node
    # Above the coinbase (subsidy + a few thousand sats of fees), so it does not qualify.
    threshold = subsidy(node.height + 7) + 100_000_000
    amounts = [10_000 + i for i in range(300)]
    amounts[17], amounts[150], amounts[299] = threshold, threshold + 1, threshold + 5_000_000
    height, txids = mine_payments(node, amounts)
    expected = {txids[i]: amounts[i] for i in (17, 150, 299)}
    # What the node itself says qualifies: exactly those three.
    totals = {t: parse_tx(node.raw_transaction(t).hex(), "regtest").total_out_sats
              for t in node.block_txids(height)}
    assert {t for t, total in totals.items() if total >= threshold} == set(expected)
    await wait_for_tip.wait_async()

    sink = CollectingSink()
    async with ServerPool([s.tcp_url for s in electrumx_servers], network="regtest") as pool:
        scanner = BlockScanner(pool, sink, network="regtest", threshold_sats=threshold)
        async with anyio.create_task_group() as tg:
            await tg.start(scanner.run)
            scanner.on_chain(Extended((chain_header(node, height),)))
            await wait_until(lambda: scanner.scanned == 1)
            tg.cancel_scope.cancel()

    assert [e.type for e in sink.events] == ["tx.large"] * 3
    assert [e.key for e in sink.events] == list(expected)  # block order
    for event in sink.events:
        assert event.data["txid"] == event.key
        assert event.data["height"] == height
        assert event.data["total_out_sats"] == expected[event.key]
        (output,) = event.data["outputs"]
        assert output["value_sats"] == expected[event.key]
        assert str(output["address"]).startswith("bcrt1q")


@pytest.mark.anyio
async def test_a_block_of_3000_transactions_is_scanned_completely(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
    wait_for_tip: TipWaiter,
) -> None:
    node = regtest_node
    node.make_many_txs(3000)
    node.mine(1)
    height = node.height
    block_txids = node.block_txids(height)
    assert len(block_txids) >= 3002  # coinbase, funding, 3000 payments
    await wait_for_tip.wait_async()

    sink = CollectingSink()
    async with ServerPool([s.tcp_url for s in electrumx_servers], network="regtest") as pool:
        # threshold 0: every transaction is fetched, parsed and reported.
        scanner = BlockScanner(pool, sink, network="regtest", threshold_sats=0)
        block = chain_header(node, height)
        t0 = time.monotonic()
        assert await scanner.block_txids(block) == block_txids
        t1 = time.monotonic()
        await scanner.scan(block)
        t2 = time.monotonic()
    print(f"\n{len(block_txids)} txs: txids in {t1 - t0:.2f}s, full scan in {t2 - t1:.2f}s")
    assert scanner.scanned == 1
    assert [e.key for e in sink.events] == block_txids


@pytest.mark.anyio
async def test_a_block_reorged_away_is_skipped_with_a_warning_or_dropped_if_announced(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
    wait_for_tip: TipWaiter, caplog: pytest.LogCaptureFixture,
) -> None:
    node = regtest_node
    node.make_many_txs(3)
    node.mine(1)
    old = chain_header(node, node.height)
    node.reorg(1)  # the old block's height now holds another block (and one more on top)
    await wait_for_tip.wait_async()
    new = chain_header(node, old.height)
    assert new.hash != old.hash

    sink = CollectingSink()
    async with ServerPool([s.tcp_url for s in electrumx_servers], network="regtest") as pool:
        scanner = BlockScanner(pool, sink, network="regtest", threshold_sats=0,
                               retry_delays=(0.05, 0.05))
        # Not told about the reorg: the txids at that height do not match its merkle root.
        with caplog.at_level(logging.INFO, logger="stream.producers.block_scan"):
            await scanner.scan(old)
        assert (scanner.scanned, scanner.skipped) == (0, 1)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and old.hash in warnings[0].getMessage()
        # Told: the old block is dropped without a try; the new one is scanned.
        scanner.on_chain(Reorg(old.height - 1, Tip(old.height, old.hash),
                               Tip(new.height, new.hash), (old.hash,), (new,)))
        await scanner.scan(old)
        assert scanner.skipped == 1
        await scanner.scan(new)
        assert scanner.scanned == 1
    assert [e.key for e in sink.events] == node.block_txids(new.height)
