"""The header chain's rules at their edges: the constructor's limits, the seed's links, the
window's lowest height (stale vs duplicate, a fork just above it vs one below it), and
the heights a Rejected reason or a NeedAncestors names.

Headers are real (ground by the helpers of test_headers.py). Expected heights are worked
out from the window in each test: ``started(server[1:21], max_depth=5)`` holds the tip at
20 and the 5 blocks below it, so its lowest height is 20 - 5 = 15.
"""

from __future__ import annotations

import re

import pytest

from stream.producers.headers import (
    POW_LIMITS,
    BlockHeader,
    ChainHeader,
    Duplicate,
    Extended,
    HeaderChain,
    KnownBlock,
    NeedAncestors,
    Rejected,
    Stale,
    Tip,
)
from tests.producers.test_headers import GENESIS, REGTEST_BITS, grind, mine, started

TIP, DEPTH = 20, 5
LOWEST = TIP - DEPTH  # 15: the lowest height the window below keeps


@pytest.fixture(scope="module")
def server() -> list[BlockHeader]:
    """A best chain by height: genesis at 0, then heights 1..20."""
    return [GENESIS, *mine(GENESIS, TIP, "main")]


def windowed(server: list[BlockHeader]) -> HeaderChain:
    """A regtest chain on ``server`` that keeps heights LOWEST..TIP."""
    chain = started(server[1:], max_depth=DEPTH)
    assert [b.height for b in chain.known_blocks()] == list(range(LOWEST, TIP + 1))
    return chain


# -- the constructor's limits --------------------------------------------------------------


def test_a_window_of_depth_one_keeps_the_tip_and_its_parent() -> None:
    blocks = mine(GENESIS, 3, "main")
    chain = started(blocks, max_depth=1)
    assert [b.height for b in chain.known_blocks()] == [2, 3]
    assert chain.max_depth == 1


def test_the_smallest_pow_limit_is_allowed_and_refuses_easier_bits() -> None:
    chain = HeaderChain(pow_limit=1)
    update = chain.accept(0, GENESIS)
    assert update == Rejected(
        f"header {GENESIS.hash} at height 0: bits {REGTEST_BITS:08x} encode a target "
        f"easier than the network's limit"
    )


def test_the_largest_256_bit_pow_limit_is_allowed() -> None:
    chain = HeaderChain(pow_limit=(1 << 256) - 1)
    assert chain.accept(0, GENESIS) == Extended((ChainHeader(0, GENESIS),))


@pytest.mark.parametrize("pow_limit", [1 << 256, (1 << 256) + 1, 1 << 257])
def test_a_pow_limit_past_256_bits_is_refused(pow_limit: int) -> None:
    message = f"pow_limit must be a positive 256-bit number, got {pow_limit}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        HeaderChain(pow_limit=pow_limit)


def test_a_retarget_every_block_lets_bits_change_at_every_height() -> None:
    harder = grind(GENESIS.hash, "harder", GENESIS.time + 600, 0x203FFFFF)
    every_block = HeaderChain(pow_limit=POW_LIMITS["regtest"], retarget_interval=1)
    assert isinstance(every_block.accept(0, GENESIS), Extended)
    assert isinstance(every_block.accept(1, harder), Extended)
    # Every second block: height 1 is between retargets, so the same change is refused.
    every_other = HeaderChain(pow_limit=POW_LIMITS["regtest"], retarget_interval=2)
    assert isinstance(every_other.accept(0, GENESIS), Extended)
    assert every_other.accept(1, harder) == Rejected(
        f"header {harder.hash} at height 1 changes bits from {REGTEST_BITS:08x} to "
        f"203fffff between retargets"
    )


def test_a_negative_start_height_is_refused_with_the_height() -> None:
    with pytest.raises(ValueError, match=r"^start_height must be >= 0, got -1$"):
        HeaderChain().accept_many(-1, [GENESIS])


def test_an_empty_run_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^accept_many needs at least one header$"):
        HeaderChain().accept_many(0, [])


# -- the seed ------------------------------------------------------------------------------


def test_a_seed_linked_by_hash_but_skipping_a_height_is_refused() -> None:
    (b1,) = mine(GENESIS, 1, "main")
    genesis = KnownBlock.from_header(0, GENESIS)
    skipping = KnownBlock.from_header(2, b1)  # b1's parent is genesis, but not at height 1
    assert skipping.prev_hash == genesis.hash
    message = (f"known blocks must be consecutive and linked: block {b1.hash} at height 2 "
               f"does not follow {GENESIS.hash} at height 0")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        HeaderChain([genesis, skipping])


def test_a_seed_at_the_next_height_but_not_linked_by_hash_is_refused() -> None:
    (b1,) = mine(GENESIS, 1, "main")
    genesis = KnownBlock.from_header(0, GENESIS)
    unlinked = KnownBlock(1, b1.hash, "ab" * 32, b1.bits)  # height 1, parent not genesis
    message = (f"known blocks must be consecutive and linked: block {b1.hash} at height 1 "
               f"does not follow {GENESIS.hash} at height 0")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        HeaderChain([genesis, unlinked])
    # Linked by both, the same two blocks seed the chain.
    chain = HeaderChain([genesis, KnownBlock.from_header(1, b1)])
    assert chain.tip == Tip(1, b1.hash)


# -- the window's lowest height ------------------------------------------------------------


def test_headers_ending_exactly_at_the_windows_lowest_height_are_duplicates(
    server: list[BlockHeader],
) -> None:
    chain = windowed(server)
    # Heights 11..15: all but the last are below the window, the last is our block there.
    assert chain.accept_many(11, server[11:LOWEST + 1]) == Duplicate()
    assert chain.tip == Tip(TIP, server[TIP].hash)


def test_headers_ending_just_below_the_window_are_stale(server: list[BlockHeader]) -> None:
    chain = windowed(server)
    # Heights 10..14: the run ends at 14, one below the window's lowest height.
    update = chain.accept_many(10, server[10:LOWEST])
    assert update == Stale("headers end at height 14, below the window (from 15)")
    assert chain.tip == Tip(TIP, server[TIP].hash)


def test_a_different_header_at_the_windows_lowest_height_forks_below_it(
    server: list[BlockHeader],
) -> None:
    chain = windowed(server)
    # A sibling of our block at 15: its parent (14) is below the window, so it cannot be
    # checked there, and it is not ours, so it is no duplicate either.
    (rival,) = mine(server[LOWEST - 1], 1, "rival")
    assert rival.hash != server[LOWEST].hash
    assert chain.accept(LOWEST, rival) == Rejected(
        f"header {rival.hash} at height 15 forks below the window "
        f"(lowest known height 15, max_depth 5)"
    )
    # With a child on top, the run is refused at the sibling's height, not its child's.
    rival_run = [rival, *mine(rival, 1, "rival-next")]
    update = chain.accept_many(LOWEST, rival_run)
    assert update == Rejected(
        f"header {rival.hash} at height 15 forks below the window "
        f"(lowest known height 15, max_depth 5)"
    )
    assert chain.tip == Tip(TIP, server[TIP].hash)


def test_a_header_not_on_our_block_just_above_the_bottom_forks_below_the_window(
    server: list[BlockHeader],
) -> None:
    chain = windowed(server)
    # Their branch forks after 14: their 16 sits on their 15, not on our 15 (the lowest).
    theirs = mine(server[LOWEST - 1], 2, "theirs")  # heights 15 and 16
    assert chain.accept(LOWEST + 1, theirs[1]) == Rejected(
        f"header {theirs[1].hash} at height 16 forks below the window "
        f"(lowest known height 15, max_depth 5)"
    )


def test_a_fork_two_above_the_bottom_asks_for_the_window_above_the_bottom(
    server: list[BlockHeader],
) -> None:
    chain = windowed(server)
    # Their branch forks after 15 (the lowest): their 17 sits on their 16, not on ours.
    theirs = mine(server[LOWEST], 2, "theirs")  # heights 16 and 17
    # The fork could be anywhere from 15 up: fetch 16 (= lowest + 1) up to 17, exclusive.
    assert chain.accept(LOWEST + 2, theirs[1]) == NeedAncestors(start=16, stop=17)
    # Fetched, the branch is 2 blocks against our 5 above the fork: not adopted.
    assert chain.accept_many(16, theirs) == Stale(
        "branch forking after height 15 has 2 blocks and no more work than the best "
        "chain's 5"
    )


# -- the heights a Rejected reason names ---------------------------------------------------


def test_a_run_that_breaks_its_links_names_the_height_of_the_break(
    server: list[BlockHeader],
) -> None:
    chain = started(server[1:3])  # tip at 2
    stray = grind(GENESIS.hash, "stray", GENESIS.time + 600)  # links to genesis, not 4
    # The run starts at 3: the third header, at 3 + 2 = 5, is the one that does not link.
    update = chain.accept_many(3, [server[3], server[4], stray])
    assert update == Rejected(
        f"header {stray.hash} at height 5 does not link to the header before it in the run"
    )
    assert chain.tip == Tip(2, server[2].hash)


def test_a_header_failing_its_proof_of_work_is_named_at_its_height(
    server: list[BlockHeader],
) -> None:
    chain = started(server[1:3])  # tip at 2
    bad = grind(server[4].hash, "bad", server[4].time + 600, valid=False)
    # The run starts at 3: the bad header is the third, at 3 + 2 = 5.
    update = chain.accept_many(3, [server[3], server[4], bad])
    assert update == Rejected(
        f"header {bad.hash} at height 5: hash is above the target its bits "
        f"{REGTEST_BITS:08x} encode"
    )
    assert chain.tip == Tip(2, server[2].hash)
