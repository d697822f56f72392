"""Addresses, scripthashes and networks: what is accepted, its canonical form, what is refused."""

from __future__ import annotations

import pytest
from embit import base58, bech32

from stream.electrum.validate import (
    address_to_script,
    canonical_address,
    validate_network,
    validate_scripthash,
)

BECH32 = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
REGTEST_BECH32 = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
P2PKH = base58.encode_check(b"\x00" + bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6"))


def refusal(address: object, network: str = "mainnet") -> str:
    with pytest.raises(ValueError) as caught:
        address_to_script(address, network)
    return str(caught.value)


def test_every_network_name_is_accepted_and_others_are_refused_listing_them() -> None:
    for network in ("mainnet", "testnet", "testnet4", "signet", "regtest"):
        assert validate_network(network) == network
    with pytest.raises(ValueError) as caught:
        validate_network("main")
    assert str(caught.value) == (
        "network must be one of mainnet, testnet, testnet4, signet, regtest, got 'main'")


def test_scripthashes_are_64_hex_characters_returned_in_lower_case() -> None:
    assert validate_scripthash("AB" * 32) == "ab" * 32
    assert validate_scripthash("0f" * 32) == "0f" * 32


@pytest.mark.parametrize("bad", ["ab" * 31, "ab" * 33, "gg" * 32, "", None, 12, b"ab" * 32])
def test_anything_else_is_not_a_scripthash(bad: object) -> None:
    with pytest.raises(ValueError) as caught:
        validate_scripthash(bad)
    assert str(caught.value) == f"invalid scripthash {bad!r}: expected 64 hex characters"


@pytest.mark.parametrize("bad", [42, 1.5, b"bc1q", ["bc1q"]])
def test_an_address_that_is_not_a_string_is_a_value_error(bad: object) -> None:
    assert refusal(bad) == f"invalid mainnet address {bad!r}"


def test_a_malformed_address_is_called_invalid_not_of_another_network() -> None:
    # Looks like bech32 up to its first "1", but its last "1" is not after a known prefix.
    message = refusal("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t1")
    assert message == "invalid mainnet address 'bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t1'"


def test_a_taproot_address_needs_a_32_byte_program() -> None:
    short = bech32.encode("bc", 1, bytes(20))
    assert refusal(short) == f"invalid mainnet address {short!r}: bad taproot program"


def test_future_witness_versions_keep_their_program_length() -> None:
    v2 = bech32.encode("bc", 2, bytes(20))
    assert address_to_script(v2, "mainnet") == bytes([0x52, 20]) + bytes(20)


def test_a_base58_payload_of_the_wrong_length_is_refused_as_such() -> None:
    short = base58.encode_check(b"\x00" + bytes(19))
    assert refusal(short) == f"invalid mainnet address {short!r}: bad length"


def test_canonical_bech32_is_lower_case_and_trimmed() -> None:
    assert canonical_address(BECH32.upper(), "mainnet") == BECH32
    assert canonical_address(f"  {BECH32}\n", "mainnet") == BECH32
    assert canonical_address(REGTEST_BECH32.upper(), "regtest") == REGTEST_BECH32


def test_canonical_base58_keeps_its_case_and_is_trimmed() -> None:
    assert canonical_address(P2PKH, "mainnet") == P2PKH
    assert canonical_address(f" {P2PKH} ", "mainnet") == P2PKH
    assert P2PKH != P2PKH.lower()  # the case is meaningful there


@pytest.mark.parametrize(("address", "network", "why"), [
    (BECH32, "regtest", "is not a regtest address"),
    (P2PKH, "testnet", "is not a testnet address"),
    (BECH32[:-1] + "5", "mainnet", "bad bech32 encoding"),
])
def test_canonical_address_refuses_what_address_to_script_refuses(
    address: str, network: str, why: str,
) -> None:
    with pytest.raises(ValueError, match=why):
        canonical_address(address, network)
