"""The proof-of-work rules at their edges: compact ``bits`` as Bitcoin Core's
``arith_uint256::SetCompact``/``GetCompact`` read and write them, work as Core's
``GetBlockProof``, and the checks a header and a retarget must pass.

Expected values are written from the rules (Core's formulas, spelled differently here),
never copied from running the code.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from stream.producers.pow import (
    POW_LIMITS,
    bits_from_target,
    block_work,
    pow_problem,
    retarget_problem,
    target_from_bits,
)

MAINNET_BITS = 0x1D00FFFF  # difficulty 1: the genesis block's bits
MAINNET_TARGET = 0xFFFF << 208
MAINNET_GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


@dataclass(frozen=True)
class Numbers:
    """A header as the rules read it: its display-hex hash and its bits."""

    hash: str
    bits: int


def core_block_proof(target: int) -> int:
    """Core's ``GetBlockProof``: ``(~target / (target + 1)) + 1`` on 256-bit numbers."""
    not_target = (1 << 256) - 1 - target
    return not_target // (target + 1) + 1


# -- SetCompact ----------------------------------------------------------------------------


def test_the_largest_32_bit_value_is_read_and_refused_as_negative_not_as_too_wide() -> None:
    with pytest.raises(ValueError, match="negative"):
        target_from_bits(0xFFFFFFFF)


@pytest.mark.parametrize(
    ("bits", "target"),
    [
        # Core's overflow test is nSize > 34, or nWord > 0xff with nSize > 33, or
        # nWord > 0xffff with nSize > 32: each limit itself still fits 256 bits.
        (0x22000001, 1 << 248),
        (0x220000FF, 0xFF << 248),
        (0x2100FFFF, 0xFFFF << 240),
        (0x207FFFFF, 0x7FFFFF << 232),
    ],
)
def test_targets_at_the_overflow_limits_still_decode(bits: int, target: int) -> None:
    assert target_from_bits(bits) == target
    assert target < 1 << 256


@pytest.mark.parametrize("bits", [0x23000001, 0x22000100, 0x21010000])
def test_one_past_each_overflow_limit_is_refused(bits: int) -> None:
    with pytest.raises(ValueError, match="above 2"):
        target_from_bits(bits)


# -- GetCompact ----------------------------------------------------------------------------


def test_a_zero_target_encodes_as_zero_bits() -> None:
    # Core: nSize = 0, nCompact = 0 << 24 = 0: no exponent byte either.
    assert bits_from_target(0) == 0


@pytest.mark.parametrize(
    ("target", "bits"),
    [
        (MAINNET_TARGET, MAINNET_BITS),
        (0x7FFFFF << 232, 0x207FFFFF),
        (0x80, 0x02008000),  # the top bit would read as the sign: one more byte
        (0x12, 0x01120000),
        (0x123456789A, 0x05123456),  # truncated to its top three bytes
    ],
)
def test_targets_encode_as_bitcoin_core_writes_them(target: int, bits: int) -> None:
    assert bits_from_target(target) == bits
    assert target_from_bits(bits) <= target


@pytest.mark.parametrize("target", [1 << 256, -1])
def test_a_target_outside_256_unsigned_bits_is_refused(target: int) -> None:
    with pytest.raises(ValueError, match=r"^a target is a 256-bit unsigned number, got "):
        bits_from_target(target)


def test_the_largest_256_bit_target_still_encodes() -> None:
    top = (1 << 256) - 1
    bits = bits_from_target(top)
    # 33 bytes once the sign bit moves the mantissa down one byte: 0x00ffff << 8*30.
    assert bits == 0x2100FFFF
    assert target_from_bits(bits) == 0xFFFF << 240


# -- work ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bits",
    [0x01010000, 0x01120000, 0x02008000, MAINNET_BITS, 0x207FFFFF, 0x1B0404CB],
)
def test_work_is_bitcoin_cores_block_proof(bits: int) -> None:
    assert block_work(bits) == core_block_proof(target_from_bits(bits))


def test_known_work_figures() -> None:
    assert block_work(0x01010000) == 1 << 255  # target 1: every other hash
    assert block_work(MAINNET_BITS) == 0x100010001  # difficulty 1's well-known chainwork
    assert block_work(0x207FFFFF) == 2  # a regtest block adds 2 to the chainwork


# -- a header's proof of work --------------------------------------------------------------


def test_bits_that_decode_to_nothing_say_why() -> None:
    problem = pow_problem(Numbers("00" * 32, 0x04923456), POW_LIMITS["regtest"])
    assert problem == "bits 04923456 encode a negative target"


def test_a_zero_target_is_named_as_such() -> None:
    assert pow_problem(Numbers("00" * 32, 0x01003456), POW_LIMITS["regtest"]) == (
        "bits 01003456 encode a zero target"
    )


def test_a_target_of_one_is_not_zero() -> None:
    assert pow_problem(Numbers(f"{1:064x}", 0x01010000), POW_LIMITS["regtest"]) is None


def test_a_target_equal_to_the_limit_is_allowed() -> None:
    header = Numbers(MAINNET_GENESIS_HASH, MAINNET_BITS)
    assert pow_problem(header, pow_limit=MAINNET_TARGET) is None
    assert pow_problem(header, pow_limit=MAINNET_TARGET - 1) == (
        "bits 1d00ffff encode a target easier than the network's limit"
    )


def test_a_hash_equal_to_the_target_meets_it() -> None:
    # CheckProofOfWork fails only when hash > target.
    assert pow_problem(Numbers(f"{MAINNET_TARGET:064x}", MAINNET_BITS),
                       POW_LIMITS["mainnet"]) is None
    assert pow_problem(Numbers(f"{MAINNET_TARGET + 1:064x}", MAINNET_BITS),
                       POW_LIMITS["mainnet"]) == "hash is above the target its bits 1d00ffff encode"


# -- retargets -----------------------------------------------------------------------------


def test_heights_count_up_from_the_first_header() -> None:
    harder = bits_from_target(MAINNET_TARGET // 2)
    run = [Numbers("aa" * 32, MAINNET_BITS), Numbers("bb" * 32, harder),
           Numbers("cc" * 32, harder)]
    # 2015 keeps the bits, 2016 is a retarget (harder is always allowed), 2017 keeps them.
    assert retarget_problem(MAINNET_BITS, 2015, run, interval=2016,
                            pow_limit=POW_LIMITS["mainnet"]) is None
    # The same run one block later changes bits at 2017, between retargets.
    assert retarget_problem(MAINNET_BITS, 2016, run, interval=2016,
                            pow_limit=POW_LIMITS["mainnet"]) == (
        f"header {'bb' * 32} at height 2017 changes bits from 1d00ffff to {harder:08x} "
        "between retargets"
    )
