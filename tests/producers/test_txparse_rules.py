"""Raw transactions read back as what they pay, to whom, and what they spend."""

from __future__ import annotations

import pytest
from embit import base58
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from stream.electrum.validate import address_to_script
from stream.producers.txparse import OutPoint, Output, ParsedTx, parse_tx

H160 = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")
OTHER_H160 = bytes(range(20))
NULL_TXID = bytes(32)
COINBASE_VOUT = 0xFFFFFFFF

# The genesis block's coinbase: 50 BTC to a bare public key (no address form).
GENESIS_COINBASE = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04"
    "ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e20"
    "6272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01"
    "000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4c"
    "ef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)
GENESIS_COINBASE_TXID = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"

P2WPKH = {
    "mainnet": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
    "testnet": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
    "testnet4": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
    "signet": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
    "regtest": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
}


def raw_tx(outputs: list[tuple[bytes, int]],
           inputs: list[tuple[bytes, int]] | None = None) -> str:
    """A serialized transaction; ``inputs`` are (txid in display byte order, vout)."""
    vin = [TransactionInput(txid, vout) for txid, vout in (inputs or [(b"\x01" * 32, 0)])]
    vout = [TransactionOutput(value, Script(script)) for script, value in outputs]
    return str(Transaction(vin=vin, vout=vout).serialize().hex())


def test_the_genesis_coinbase_is_a_coinbase_paying_50_btc_to_no_address() -> None:
    tx = parse_tx(GENESIS_COINBASE, "mainnet")
    assert tx == ParsedTx(GENESIS_COINBASE_TXID, (Output(None, 50 * 100_000_000),), ())
    assert tx.is_coinbase
    assert tx.total_out_sats == 5_000_000_000


@pytest.mark.parametrize("network", sorted(P2WPKH))
def test_an_output_reads_back_as_the_address_it_pays_on_each_network(network: str) -> None:
    address = P2WPKH[network]
    tx = parse_tx(raw_tx([(address_to_script(address, network), 1234)]), network)
    assert tx.outputs == (Output(address, 1234),)


def test_base58_outputs_read_back_as_their_address() -> None:
    p2pkh = base58.encode_check(b"\x00" + H160)
    p2sh = base58.encode_check(b"\x05" + OTHER_H160)
    raw = raw_tx([(address_to_script(p2pkh, "mainnet"), 1),
                  (address_to_script(p2sh, "mainnet"), 2)])
    assert parse_tx(raw, "mainnet").outputs == (Output(p2pkh, 1), Output(p2sh, 2))


def test_an_op_return_output_has_no_address_but_keeps_its_place_and_value() -> None:
    raw = raw_tx([(b"\x6a\x04memo", 0), (b"\x00\x14" + H160, 700)])
    tx = parse_tx(raw, "mainnet")
    assert tx.outputs == (Output(None, 0), Output(P2WPKH["mainnet"], 700))
    assert tx.outputs_json() == [
        {"address": None, "value_sats": 0},
        {"address": P2WPKH["mainnet"], "value_sats": 700},
    ]


def test_the_txid_is_the_one_bitcoin_gives_the_transaction() -> None:
    raw = raw_tx([(b"\x00\x14" + H160, 5)])
    assert parse_tx(raw, "regtest").txid == Transaction.from_string(raw).txid().hex()
    assert parse_tx(GENESIS_COINBASE, "regtest").txid == GENESIS_COINBASE_TXID


def test_spends_name_the_funding_txid_and_output_in_order() -> None:
    funding = parse_tx(raw_tx([(b"\x00\x14" + H160, 10), (b"\x00\x14" + OTHER_H160, 20)]),
                       "mainnet")
    other = "ab" * 32
    raw = raw_tx([(b"\x00\x14" + H160, 25)],
                 inputs=[(bytes.fromhex(funding.txid), 1), (bytes.fromhex(other), 7)])
    tx = parse_tx(raw, "mainnet")
    assert tx.spends == (OutPoint(funding.txid, 1), OutPoint(other, 7))
    assert not tx.is_coinbase


@pytest.mark.parametrize(("txid", "vout"), [
    (NULL_TXID, 0),  # the null txid alone is not a coinbase input
    (b"\x02" * 32, COINBASE_VOUT),  # nor is the coinbase index on a real txid
])
def test_only_the_null_outpoint_marks_a_coinbase(txid: bytes, vout: int) -> None:
    tx = parse_tx(raw_tx([(b"\x00\x14" + H160, 1)], inputs=[(txid, vout)]), "mainnet")
    assert tx.spends == (OutPoint(txid.hex(), vout),)
    assert not tx.is_coinbase


def test_a_coinbase_input_is_not_a_spend() -> None:
    tx = parse_tx(raw_tx([(b"\x00\x14" + H160, 1)], inputs=[(NULL_TXID, COINBASE_VOUT)]),
                  "mainnet")
    assert tx.spends == ()
    assert tx.is_coinbase


def test_received_by_sums_only_the_outputs_paying_that_address() -> None:
    me, other = P2WPKH["mainnet"], base58.encode_check(b"\x00" + OTHER_H160)
    raw = raw_tx([(b"\x00\x14" + H160, 300), (address_to_script(other, "mainnet"), 50),
                  (b"\x00\x14" + H160, 200)])
    tx = parse_tx(raw, "mainnet")
    assert tx.received_by(me) == 500
    assert tx.received_by(other) == 50
    assert tx.received_by(P2WPKH["regtest"]) == 0
    assert tx.total_out_sats == 550


def test_unknown_network_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown network 'main'"):
        parse_tx(GENESIS_COINBASE, "main")


@pytest.mark.parametrize("garbage", ["", "zz", "0100", GENESIS_COINBASE[:-10]])
def test_what_is_not_a_transaction_raises_value_error(garbage: str) -> None:
    with pytest.raises(ValueError, match="not a raw transaction"):
        parse_tx(garbage, "mainnet")
