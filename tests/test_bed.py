"""The test bed itself: the node's chain is one that real ElectrumX servers accept and follow."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import pytest
from embit.ec import PublicKey, Signature
from embit.script import p2pkh
from embit.transaction import Transaction

from tests.bed.bed import TipWaiter, ensure_running, startup_times
from tests.bed.electrumx import STOCK_LIMITS, ElectrumXError, ElectrumXServer
from tests.bed.node import (
    ADDRESS_KINDS,
    REGTEST_GENESIS_HASH,
    RegtestNode,
    _dsha,
    _merkle_root,
    scripthash,
)


def _poll(check: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll `check()` until it returns true (ElectrumX lags the node by a poll interval)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check}")
        time.sleep(0.02)


def test_bed_startup_time_is_reported(regtest_node: RegtestNode,
                                      electrumx_servers: list[ElectrumXServer]) -> None:
    print(f"\nbed start-up: node {startup_times.get('node', 0):.3f}s, "
          f"3 ElectrumX servers synced {startup_times.get('electrumx', 0):.3f}s")
    assert all(s.is_running for s in electrumx_servers)


def test_node_chain_links_meets_target_and_commits_to_its_txids(
        regtest_node: RegtestNode) -> None:
    node = regtest_node
    node.pay(node.new_address(), 20_000)
    node.mine()
    assert node.block_hash(0) == REGTEST_GENESIS_HASH
    for height in range(1, node.height + 1):
        header = node.header(height)
        digest = _dsha(header)
        assert digest[::-1].hex() == node.block_hash(height)
        assert header[4:36][::-1].hex() == node.block_hash(height - 1)
        bits = struct.unpack_from("<I", header, 72)[0]
        assert bits == 0x207FFFFF
        assert int.from_bytes(digest, "little") <= 0x7FFFFF << (8 * (0x20 - 3))
        txids = node.block_txids(height)
        assert header[36:68] == _merkle_root([bytes.fromhex(t)[::-1] for t in txids])


def test_electrumx_reports_the_node_tip_height_and_header(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        wait_for_tip: TipWaiter) -> None:
    regtest_node.mine(2)
    wait_for_tip()
    for server in electrumx_servers:
        height, header_hex = server.tip()
        assert height == regtest_node.height
        assert header_hex == regtest_node.header(height).hex()
        assert server.request("blockchain.block.header", 1) == regtest_node.header(1).hex()


def test_payment_is_visible_through_transaction_get(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        wait_for_tip: TipWaiter) -> None:
    address = regtest_node.new_address()
    txid = regtest_node.pay(address, 123_456)
    server = electrumx_servers[0]
    assert server.request("blockchain.transaction.get", txid) == \
        regtest_node.raw_transaction(txid).hex()
    _poll(lambda: [t["tx_hash"] for t in server.request(
        "blockchain.scripthash.get_mempool", scripthash(address))] == [txid])

    (block_hash,) = regtest_node.mine()
    wait_for_tip()
    verbose = server.request("blockchain.transaction.get", txid, True)
    assert verbose["blockhash"] == block_hash
    assert verbose["confirmations"] == 1
    outputs = {o["scriptPubKey"].get("address"): o["value"] for o in verbose["vout"]}
    assert outputs[address] == pytest.approx(0.00123456)
    assert server.request("blockchain.scripthash.get_history", scripthash(address)) == [
        {"tx_hash": txid, "height": regtest_node.height}]


def test_electrumx_follows_a_reorg(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        wait_for_tip: TipWaiter) -> None:
    node = regtest_node
    address = node.new_address()
    txid = node.pay(address, 50_000)
    node.mine()
    wait_for_tip()
    fork_height = node.height
    old_header = node.header(fork_height).hex()

    node.reorg(1, 2)  # replace the tip by 2 new blocks; the payment goes back to the mempool
    wait_for_tip()
    assert node.height == fork_height + 1
    assert node.tx_height(txid) == 0
    in_mempool = [{"tx_hash": txid, "height": 0, "fee": node.tx_fee(txid)}]
    for server in electrumx_servers:
        new_header = server.request("blockchain.block.header", fork_height)
        assert new_header != old_header
        assert new_header == node.header(fork_height).hex()

        def back_in_mempool(server: ElectrumXServer = server) -> bool:
            history = server.request("blockchain.scripthash.get_history", scripthash(address))
            return bool(history == in_mempool)

        _poll(back_in_mempool)


def test_reorg_can_drop_a_transaction(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        wait_for_tip: TipWaiter) -> None:
    node = regtest_node
    address = node.new_address()
    txid = node.pay(address, 60_000)
    node.mine()
    wait_for_tip()
    node.reorg(1, drop_txids=[txid])
    wait_for_tip()
    assert node.tx_height(txid) is None
    _poll(lambda: electrumx_servers[1].request(
        "blockchain.scripthash.get_history", scripthash(address)) == [])


def test_evict_removes_the_tx_from_electrumx_mempool(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer]) -> None:
    node = regtest_node
    address = node.new_address()
    txid = node.pay(address, 70_000)
    child = node.pay(node.new_address(), 10_000, from_address=address)
    server = electrumx_servers[2]
    sh = scripthash(address)
    _poll(lambda: {t["tx_hash"] for t in server.request(
        "blockchain.scripthash.get_mempool", sh)} == {txid, child})

    assert set(node.evict(txid)) == {txid, child}  # descendants go too
    assert txid not in node.mempool_txids
    _poll(lambda: server.request("blockchain.scripthash.get_mempool", sh) == [])


def test_a_confirmed_payment_double_spent_in_a_reorg_leaves_electrumx(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        wait_for_tip: TipWaiter) -> None:
    node = regtest_node
    address = node.new_address()
    txid = node.pay(address, 80_000)
    node.mine()
    wait_for_tip()
    node.reorg(1)  # back to the mempool, unmined
    conflict = node.double_spend(txid)
    node.mine()
    wait_for_tip()
    assert node.tx_height(txid) is None
    assert node.tx_height(conflict) == node.height
    assert electrumx_servers[0].request(
        "blockchain.scripthash.get_history", scripthash(address)) == []


def test_every_address_kind_is_indexed_and_spendable(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        wait_for_tip: TipWaiter) -> None:
    node = regtest_node
    addresses = {kind: node.new_address(kind) for kind in ADDRESS_KINDS}
    for address in addresses.values():
        node.pay(address, 100_000)
    node.mine()
    for address in addresses.values():  # spend back to the node: a "sent" for each kind
        node.pay(node.wallet_address, 30_000, from_address=address)
    node.mine()
    wait_for_tip()
    server = electrumx_servers[0]
    for kind, address in addresses.items():
        balance = server.request("blockchain.scripthash.get_balance", scripthash(address))
        assert balance["confirmed"] == node.balance(address), kind
        assert 0 < balance["confirmed"] < 70_000, kind
        assert len(server.request("blockchain.scripthash.get_history",
                                  scripthash(address))) == 2, kind


def test_a_block_of_a_thousand_transactions_is_indexed(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        wait_for_tip: TipWaiter) -> None:
    node = regtest_node
    t0 = time.monotonic()
    txids = node.make_many_txs(1000, sats=[1_000 + i for i in range(1000)])
    (block_hash,) = node.mine()
    print(f"\n1000 payments + mining: {time.monotonic() - t0:.3f}s")
    block_txids = node.block_txids(block_hash)
    assert len(block_txids) == 1002  # coinbase, fan-out, 1000 payments
    assert block_txids[2:] == txids
    wait_for_tip()
    server = electrumx_servers[1]
    assert server.request("blockchain.transaction.id_from_pos", node.height, 777) == \
        block_txids[777]


def test_fee_estimates_come_from_the_node(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        wait_for_tip: TipWaiter) -> None:
    regtest_node.set_fee_estimate({1: 25, 6: 10})
    regtest_node.mine()  # ElectrumX caches estimates per tip
    wait_for_tip()
    server = electrumx_servers[0]
    assert server.request("blockchain.estimatefee", 1) == pytest.approx(0.00025)
    assert server.request("blockchain.estimatefee", 12) == pytest.approx(0.0001)
    regtest_node.set_fee_estimate(None)


def test_stopped_and_killed_servers_come_back_on_the_same_ports(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer]) -> None:
    stopped, killed = electrumx_servers[1], electrumx_servers[2]
    ports = (killed.tcp_port, killed.ssl_port)
    stopped.stop()
    killed.kill()
    for server in (stopped, killed):
        assert not server.is_running
        with pytest.raises(OSError):
            server.request("server.ping", timeout=1)
        with pytest.raises(ElectrumXError):
            server.wait_for_height(0, timeout=0.2)
    regtest_node.mine()
    stopped.restart()
    ensure_running(regtest_node, electrumx_servers)  # what the fixture does for later tests
    assert (killed.tcp_port, killed.ssl_port) == ports
    for server in (stopped, killed):
        assert server.tip() == (regtest_node.height,
                                regtest_node.header(regtest_node.height).hex())


def test_wallet_payments_carry_valid_signatures(regtest_node: RegtestNode) -> None:
    txid = regtest_node.pay(regtest_node.new_address(), 1_000)
    tx = Transaction.parse(regtest_node.raw_transaction(txid))
    for i, inp in enumerate(tx.vin):
        spent = Transaction.parse(regtest_node.raw_transaction(inp.txid.hex())).vout[inp.vout]
        sig, pub = inp.witness.items
        key = PublicKey.parse(pub)
        digest = tx.sighash_segwit(i, p2pkh(key), spent.value)
        assert key.verify(Signature.parse(sig[:-1]), digest)


def test_start_electrumx_runs_an_extra_server_with_stock_throttling(
        regtest_node: RegtestNode, start_electrumx: Callable[..., ElectrumXServer]) -> None:
    server = start_electrumx(pad_wait=None, **STOCK_LIMITS)
    log = server.log_path.read_text()
    assert "session cost hard limit 10,000" in log
    assert "request sleep 2,500ms" in log
    assert server.tip() == (regtest_node.height, regtest_node.header(regtest_node.height).hex())
