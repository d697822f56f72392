"""An 80-byte header read field by field as Bitcoin serializes it (checked against mainnet
block 1, hashed here with hashlib), and whether a hash meets the target its bits encode."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from stream.producers.block_header import HEADER_SIZE, BlockHeader, meets_target

# Mainnet block 1: its parent is the genesis block, so the prev_hash field starts with
# non-zero bytes right after the version (the genesis header's prev_hash is all zeros).
BLOCK_1 = (
    "010000006fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000982051fd1e4b"
    "a744bbbe680e1fee14677ba1a3c3540bf7b1cdb606e857233e0e61bc6649ffff001d01e36299"
)
BLOCK_1_HASH = "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048"
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
NON_HEX = r"^a block header must be hex: it has non-hex characters$"


def test_mainnet_block_1_reads_field_by_field() -> None:
    raw = bytes.fromhex(BLOCK_1)
    assert len(raw) == HEADER_SIZE
    header = BlockHeader.parse(raw)
    assert header.hash == hashlib.sha256(hashlib.sha256(raw).digest()).digest()[::-1].hex()
    assert header.hash == BLOCK_1_HASH
    assert header.version == 1
    assert header.prev_hash == GENESIS_HASH
    assert header.merkle_root == (
        "0e3e2357e806b6cdb1f70b54c3a3a17b6714ee1f0e68bebb44a74b1efd512098"
    )
    assert header.time == 1231469665
    assert header.bits == 0x1D00FFFF
    assert header.nonce == 2573394689
    assert meets_target(header)


@pytest.mark.parametrize(("field", "version"), [("ffffffff", -1), ("00000080", -(1 << 31)),
                                               ("ffffff7f", (1 << 31) - 1)])
def test_the_version_is_a_signed_32_bit_number(field: str, version: int) -> None:
    # Core's nVersion is an int32_t, serialized little-endian.
    header = BlockHeader.parse(field + BLOCK_1[8:])
    assert header.version == version
    assert header.prev_hash == GENESIS_HASH


@pytest.mark.parametrize("data", ["zz" + BLOCK_1[2:], BLOCK_1[:-2] + "0g"])
def test_a_header_with_non_hex_characters_is_refused(data: str) -> None:
    with pytest.raises(ValueError, match=NON_HEX):
        BlockHeader.parse(data)


def test_whitespace_in_the_hex_is_refused_though_fromhex_would_skip_it() -> None:
    with pytest.raises(ValueError, match=NON_HEX):
        BlockHeader.parse(" " + BLOCK_1[1:])
    with pytest.raises(ValueError, match=NON_HEX):
        BlockHeader.parse(BLOCK_1[:80] + "  " + BLOCK_1[82:])


@pytest.mark.parametrize(("data", "kind"), [(12, "int"), (None, "NoneType"),
                                            (list(range(80)), "list")])
def test_a_header_that_is_neither_bytes_nor_hex_is_a_type_error(data: object,
                                                                 kind: str) -> None:
    with pytest.raises(TypeError, match=rf"^a block header is bytes or a hex str, got {kind}$"):
        BlockHeader.parse(data)  # type: ignore[arg-type]


def test_a_bytearray_parses_like_bytes() -> None:
    assert BlockHeader.parse(bytearray.fromhex(BLOCK_1)) == BlockHeader.parse(BLOCK_1)


# -- meeting the target: hash <= target, and a zero target never ----------------------------
# A real hash cannot be chosen, so these put a chosen number in the parsed header's place.


def with_hash(number: int, bits: int) -> BlockHeader:
    return dataclasses.replace(BlockHeader.parse(BLOCK_1), hash=f"{number:064x}", bits=bits)


def test_a_hash_equal_to_its_target_meets_it() -> None:
    target = 0xFFFF << 208
    assert meets_target(with_hash(target, 0x1D00FFFF))
    assert not meets_target(with_hash(target + 1, 0x1D00FFFF))


def test_a_target_of_one_is_met_by_hashes_zero_and_one() -> None:
    assert meets_target(with_hash(1, 0x01010000))
    assert meets_target(with_hash(0, 0x01010000))
    assert not meets_target(with_hash(2, 0x01010000))


@pytest.mark.parametrize("bits", [0x00000000, 0x01003456, 0x03000000])
def test_a_zero_target_is_met_by_no_hash_not_even_zero(bits: int) -> None:
    assert not meets_target(with_hash(0, bits))


@pytest.mark.parametrize("bits", [0x04923456, 0x23000001])
def test_bits_that_encode_no_target_are_never_met(bits: int) -> None:
    assert not meets_target(with_hash(0, bits))
