"""The proof-of-work rules, on plain numbers: compact ``bits``, targets, work, each
network's limit and retarget interval. Pure (Bitcoin Core's ``arith_uint256`` and
``pow.cpp`` in Python); ``headers`` applies them to a chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

__all__ = [
    "POW_LIMITS",
    "RETARGET_INTERVALS",
    "bits_from_target",
    "block_work",
    "pow_problem",
    "retarget_problem",
    "target_from_bits",
]

_MAINNET_POW_LIMIT = (1 << 224) - 1  # 0x00000000ffff...ff
POW_LIMITS: Mapping[str, int] = {
    "mainnet": _MAINNET_POW_LIMIT,
    "testnet": _MAINNET_POW_LIMIT,
    "testnet4": _MAINNET_POW_LIMIT,
    "signet": 0x00000377AE << 216,
    "regtest": (1 << 255) - 1,
}
"""Each network's proof-of-work limit (Bitcoin Core's ``consensus.powLimit``)."""

RETARGET_INTERVALS: Mapping[str, int | None] = {
    "mainnet": 2016,
    "signet": 2016,
    # testnet and testnet4 allow minimum-difficulty blocks after 20 minutes, so their bits
    # may change between retargets; regtest never retargets (and has no min-difficulty rule
    # worth enforcing).
    "testnet": None,
    "testnet4": None,
    "regtest": None,
}
"""Blocks between difficulty adjustments, where ``bits`` may only change at one."""



def target_from_bits(bits: int) -> int:
    """Decode the compact ``bits`` field into the 256-bit target (Bitcoin Core's
    ``SetCompact``). ``ValueError`` for a value outside 32 bits, a negative encoding or
    one that overflows 256 bits. A zero mantissa decodes to target 0, which no hash meets."""
    if not 0 <= bits <= 0xFFFFFFFF:
        raise ValueError(f"bits must fit in 32 bits, got {bits:#x}")
    size = bits >> 24
    word = bits & 0x007FFFFF
    if size <= 3:
        # Core tests the sign and overflow on the shifted mantissa, so 0x00923456 is 0.
        word >>= 8 * (3 - size)
    if word and bits & 0x00800000:
        raise ValueError(f"bits {bits:08x} encode a negative target")
    if word and (size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32)):
        raise ValueError(f"bits {bits:08x} encode a target above 2**256")
    return word if size <= 3 else word << (8 * (size - 3))


def bits_from_target(target: int) -> int:
    """Encode a target in compact form (Bitcoin Core's ``GetCompact``); the mantissa keeps
    its top 3 bytes, so ``target_from_bits(bits_from_target(t)) <= t``."""
    if not 0 <= target < 1 << 256:
        raise ValueError(f"a target is a 256-bit unsigned number, got {target}")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        compact = target << (8 * (3 - size))
    else:
        compact = target >> (8 * (size - 3))
    if compact & 0x00800000:  # would read as the sign bit: move a byte into the exponent
        compact >>= 8
        size += 1
    return compact | size << 24


def block_work(bits: int) -> int:
    """The expected number of hashes to find a block at ``bits``: ``2**256 // (target+1)``
    (Bitcoin Core's ``GetBlockProof``); 0 for bits that decode to no valid target."""
    try:
        target = target_from_bits(bits)
    except ValueError:
        return 0
    return (1 << 256) // (target + 1) if target else 0


class _Headed(Protocol):
    """What the rules read of a header."""

    @property
    def hash(self) -> str: ...

    @property
    def bits(self) -> int: ...


def pow_problem(header: _Headed, pow_limit: int) -> str | None:
    """Why ``header`` fails its proof of work, or None if it passes."""
    try:
        target = target_from_bits(header.bits)
    except ValueError as exc:
        return str(exc)
    if target == 0:
        return f"bits {header.bits:08x} encode a zero target"
    if target > pow_limit:
        return f"bits {header.bits:08x} encode a target easier than the network's limit"
    # The display hex is the hash reversed, so reading it big-endian is reading the raw
    # hash little-endian, as the consensus rule does.
    if int(header.hash, 16) > target:
        return f"hash is above the target its bits {header.bits:08x} encode"
    return None


def retarget_problem(parent_bits: int, first_height: int, new: Sequence[_Headed], *,
                     interval: int | None, pow_limit: int) -> str | None:
    """Why ``new`` (from ``first_height``, on a parent with ``parent_bits``) breaks the
    retarget rule, or None: ``bits`` stays the same between retargets (every
    ``interval`` blocks; None: no rule) and eases by at most 4x at one."""
    if interval is None:
        return None
    for i, header in enumerate(new):
        height = first_height + i
        if height % interval:
            if header.bits != parent_bits:
                return (
                    f"header {header.hash} at height {height} changes bits from "
                    f"{parent_bits:08x} to {header.bits:08x} between retargets"
                )
        else:
            # Bitcoin Core clamps the adjustment to 4x easier, then to the limit, then
            # truncates to compact form: the result can only be at or below this bound.
            bound = min(pow_limit, target_from_bits(parent_bits) * 4)
            if target_from_bits(header.bits) > bound:
                return (
                    f"header {header.hash} at height {height} eases the target more "
                    f"than 4x at a retarget"
                )
        parent_bits = header.bits
    return None
