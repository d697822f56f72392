"""Txids and addresses are checked (per network) before anything is sent."""

from __future__ import annotations

import hashlib

import pytest
from embit import base58

from stream.electrum.validate import (
    address_to_script,
    address_to_scripthash,
    validate_txid,
)

H160 = bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")


def test_electrum_protocol_doc_example_scripthash() -> None:
    # From the Electrum protocol documentation ("Script Hashes").
    assert (
        address_to_scripthash("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "mainnet")
        == "8b01df4e368ea28f8dc0423bcf7a4923e3a12d307c875e47a0cfbf90b5c39161"
    )


@pytest.mark.parametrize(
    ("address", "network", "script"),
    [
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "mainnet", "0014" + H160.hex()),
        ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "mainnet", "0014" + H160.hex()),
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "testnet", "0014" + H160.hex()),
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "testnet4", "0014" + H160.hex()),
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "signet", "0014" + H160.hex()),
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest", "0014" + H160.hex()),
        (
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
            "mainnet",
            "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        ),
        (base58.encode_check(b"\x00" + H160), "mainnet", "76a914" + H160.hex() + "88ac"),
        (base58.encode_check(b"\x05" + H160), "mainnet", "a914" + H160.hex() + "87"),
        (base58.encode_check(b"\x6f" + H160), "regtest", "76a914" + H160.hex() + "88ac"),
        (base58.encode_check(b"\xc4" + H160), "signet", "a914" + H160.hex() + "87"),
    ],
)
def test_addresses_map_to_their_script(address: str, network: str, script: str) -> None:
    assert address_to_script(address, network).hex() == script
    digest = hashlib.sha256(bytes.fromhex(script)).digest()[::-1].hex()
    assert address_to_scripthash(address, network) == digest


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "regtest"),
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "mainnet"),
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "testnet"),
        (base58.encode_check(b"\x00" + H160), "testnet"),
        (base58.encode_check(b"\x6f" + H160), "mainnet"),
    ],
)
def test_addresses_of_another_network_are_rejected(address: str, network: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        address_to_scripthash(address, network)


@pytest.mark.parametrize(
    "address",
    [
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",  # bad checksum
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7KV8F3T4",  # mixed case
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb",  # bad base58 checksum
        "",
        "hello",
        None,
    ],
)
def test_malformed_addresses_raise_value_error_naming_them(address: object) -> None:
    with pytest.raises(ValueError, match=repr(address)[:10].replace("(", r"\(")):
        address_to_scripthash(address, "mainnet")


def test_txids_are_64_hex_and_lowered() -> None:
    txid = "AB" * 32
    assert validate_txid(txid) == "ab" * 32
    for bad in ("ab" * 31, "zz" * 32, 42, "ab" * 32 + "\n"):
        with pytest.raises(ValueError, match="invalid txid"):
            validate_txid(bad)
