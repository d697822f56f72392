"""The header-chain core: parsing, proof of work, extension, duplicates, gaps and reorgs.

Headers are real: built here and ground against easy regtest-style targets, so every hash
is computed, not made up.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.producers.headers import (
    DEFAULT_MAX_DEPTH,
    POW_LIMITS,
    BlockHeader,
    ChainHeader,
    ChainUpdate,
    Duplicate,
    Extended,
    HeaderChain,
    KnownBlock,
    NeedAncestors,
    Rejected,
    Reorg,
    Stale,
    Tip,
    bits_from_target,
    block_event_data,
    block_work,
    meets_target,
    reorg_event_data,
    target_from_bits,
)

REGTEST_GENESIS = (
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12"
    "b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4adae5494dffff7f2002000000"
)
REGTEST_GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
MAINNET_GENESIS = (
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12"
    "b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)
MAINNET_GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
REGTEST_BITS = 0x207FFFFF
GENESIS = BlockHeader.parse(REGTEST_GENESIS)


# -- building real headers -----------------------------------------------------------------


def serialize(
    version: int, prev_hash: str, merkle_root: str, time: int, bits: int, nonce: int
) -> bytes:
    return (
        version.to_bytes(4, "little", signed=True)
        + bytes.fromhex(prev_hash)[::-1]
        + bytes.fromhex(merkle_root)[::-1]
        + time.to_bytes(4, "little")
        + bits.to_bytes(4, "little")
        + nonce.to_bytes(4, "little")
    )


def grind(
    prev_hash: str, label: str, time: int, bits: int = REGTEST_BITS, *, valid: bool = True
) -> BlockHeader:
    """A header on ``prev_hash`` whose hash meets (or, with valid=False, misses) the target
    its ``bits`` encode. ``label`` sets the merkle root, so branches differ."""
    merkle = hashlib.sha256(label.encode()).hexdigest()
    for nonce in range(1_000_000):
        header = BlockHeader.parse(serialize(0x20000000, prev_hash, merkle, time, bits, nonce))
        if meets_target(header) == valid:
            return header
    raise AssertionError("no nonce found")


def mine(
    parent: BlockHeader, count: int, label: str, bits: int = REGTEST_BITS
) -> list[BlockHeader]:
    """``count`` headers on top of ``parent``."""
    headers: list[BlockHeader] = []
    prev = parent
    for i in range(count):
        prev = grind(prev.hash, f"{label}-{i}", prev.time + 600, bits)
        headers.append(prev)
    return headers


def regtest_chain(max_depth: int = DEFAULT_MAX_DEPTH) -> HeaderChain:
    return HeaderChain.for_network("regtest", max_depth=max_depth)


def started(headers: list[BlockHeader], max_depth: int = DEFAULT_MAX_DEPTH) -> HeaderChain:
    """A regtest chain holding genesis (height 0) and ``headers`` at heights 1..n."""
    chain = regtest_chain(max_depth)
    assert isinstance(chain.accept_many(0, [GENESIS, *headers]), Extended)
    return chain


def deliver(
    chain: HeaderChain, height: int, header: BlockHeader, server: list[BlockHeader]
) -> tuple[ChainUpdate, list[int]]:
    """What the block producer does with one tip notification: accept it, and while the
    chain asks for ancestors fetch them from ``server`` (its chain by height, genesis at 0).
    Returns the final update and the start heights it fetched from."""
    fetched: list[int] = []
    update = chain.accept(height, header)
    while isinstance(update, NeedAncestors):
        assert not fetched or update.start < fetched[-1], "start must go down"
        fetched.append(update.start)
        update = chain.accept_many(update.start, server[update.start : height + 1])
    return update, fetched


# -- parsing -------------------------------------------------------------------------------


def test_regtest_genesis_parses_to_its_hash() -> None:
    header = BlockHeader.parse(REGTEST_GENESIS)
    assert header.hash == REGTEST_GENESIS_HASH
    assert header.version == 1
    assert header.prev_hash == "00" * 32
    assert header.merkle_root == (
        "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    )
    assert (header.time, header.bits, header.nonce) == (1296688602, REGTEST_BITS, 2)
    assert header.hex() == REGTEST_GENESIS
    assert meets_target(header)


def test_mainnet_genesis_parses_and_meets_its_target() -> None:
    header = BlockHeader.parse(bytes.fromhex(MAINNET_GENESIS))
    assert header.hash == MAINNET_GENESIS_HASH
    assert header.bits == 0x1D00FFFF
    assert target_from_bits(0x1D00FFFF) == 0xFFFF << 208
    assert meets_target(header)
    chain = HeaderChain.for_network("mainnet")
    assert chain.accept(0, header) == Extended((ChainHeader(0, header),))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (REGTEST_GENESIS[:-2], "160 hex characters, got 158"),
        (REGTEST_GENESIS + "00", "160 hex characters, got 162"),
        ("zz" + REGTEST_GENESIS[2:], "non-hex"),
        (" " + REGTEST_GENESIS[1:], "non-hex"),
        (bytes(79), "80 bytes, got 79"),
        (b"", "80 bytes, got 0"),
    ],
)
def test_parse_rejects_wrong_length_and_bad_hex(data: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BlockHeader.parse(data)


# -- targets and work ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "target"),
    [  # Bitcoin Core's arith_uint256 SetCompact vectors
        (0x00000000, 0),
        (0x00123456, 0),
        (0x01003456, 0),
        (0x01123456, 0x12),
        (0x02123456, 0x1234),
        (0x03123456, 0x123456),
        (0x04123456, 0x12345600),
        (0x05009234, 0x92340000),
        (0x20123456, 0x123456 << 232),
        (REGTEST_BITS, 0x7FFFFF << 232),
        (0x00923456, 0),  # sign bit with a zero mantissa after the shift: not negative
    ],
)
def test_target_from_bits_matches_bitcoin_core(bits: int, target: int) -> None:
    assert target_from_bits(bits) == target


@pytest.mark.parametrize("bits", [0x04923456, 0x01FEDCBA, 0x2080FFFF])
def test_target_from_bits_rejects_negative_encodings(bits: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        target_from_bits(bits)


@pytest.mark.parametrize("bits", [0xFF123456, 0x23000001, 0x22000100, 0x21010000])
def test_target_from_bits_rejects_overflow(bits: int) -> None:
    with pytest.raises(ValueError, match="above 2\\*\\*256"):
        target_from_bits(bits)


def test_target_from_bits_rejects_more_than_32_bits() -> None:
    with pytest.raises(ValueError, match="32 bits"):
        target_from_bits(1 << 32)


@given(st.integers(min_value=0, max_value=(1 << 256) - 1))
def test_compact_encoding_keeps_the_top_three_bytes(target: int) -> None:
    decoded = target_from_bits(bits_from_target(target))
    assert decoded <= target
    assert target - decoded < 1 << max(0, target.bit_length() - 16)


@given(st.integers(min_value=3, max_value=32), st.integers(min_value=0x8000, max_value=0x7FFFFF))
def test_canonical_bits_round_trip(size: int, mantissa: int) -> None:
    bits = size << 24 | mantissa
    assert bits_from_target(target_from_bits(bits)) == bits


def test_block_work_is_bitcoin_cores_block_proof() -> None:
    assert block_work(REGTEST_BITS) == 2
    assert block_work(0x1D00FFFF) == 0x100010001  # difficulty 1
    assert block_work(0x04923456) == 0  # negative
    assert block_work(0) == 0


def test_hash_above_target_does_not_meet_it() -> None:
    bad = grind(GENESIS.hash, "bad", GENESIS.time + 1, valid=False)
    assert not meets_target(bad)
    tiny = grind(GENESIS.hash, "tiny", GENESIS.time + 1, 0x03000001, valid=False)
    assert not meets_target(tiny)
    zero = grind(GENESIS.hash, "zero", GENESIS.time + 1, 0x01003456, valid=False)
    assert not meets_target(zero)
    negative = grind(GENESIS.hash, "neg", GENESIS.time + 1, 0x20800001, valid=False)
    assert not meets_target(negative)


# -- extension and duplicates --------------------------------------------------------------


def test_empty_chain_adopts_the_first_header() -> None:
    chain = regtest_chain()
    assert chain.tip is None
    update = chain.accept(0, GENESIS)
    assert update == Extended((ChainHeader(0, GENESIS),))
    assert chain.tip == Tip(0, REGTEST_GENESIS_HASH)


def test_chain_extends_one_block_at_a_time() -> None:
    chain = started([])
    blocks = mine(GENESIS, 3, "main")
    for height, header in enumerate(blocks, start=1):
        update = chain.accept(height, header)
        assert update == Extended((ChainHeader(height, header),))
        assert chain.tip == Tip(height, header.hash)


def test_second_server_reporting_the_same_tip_is_a_duplicate() -> None:
    chain = started([])
    (b1,) = mine(GENESIS, 1, "main")
    assert isinstance(chain.accept(1, b1), Extended)
    assert chain.accept(1, BlockHeader.parse(b1.hex())) == Duplicate()
    assert chain.accept_many(0, [GENESIS, b1]) == Duplicate()


def test_lagging_server_reporting_an_old_tip_is_a_duplicate() -> None:
    blocks = mine(GENESIS, 3, "main")
    chain = started(blocks)
    assert chain.accept(2, blocks[1]) == Duplicate()
    assert chain.tip == Tip(3, blocks[2].hash)


def test_run_with_a_known_prefix_extends_with_the_new_part_only() -> None:
    blocks = mine(GENESIS, 4, "main")
    chain = started(blocks[:2])
    update = chain.accept_many(1, blocks)
    assert update == Extended((ChainHeader(3, blocks[2]), ChainHeader(4, blocks[3])))


# -- invalid headers -----------------------------------------------------------------------


def test_hash_above_target_is_rejected_and_changes_nothing() -> None:
    chain = started([])
    bad = grind(GENESIS.hash, "bad", GENESIS.time + 600, valid=False)
    update = chain.accept(1, bad)
    assert isinstance(update, Rejected)
    assert "above the target" in update.reason
    assert chain.tip == Tip(0, REGTEST_GENESIS_HASH)


def test_bits_claiming_a_tiny_target_are_rejected() -> None:
    chain = started([])
    bad = grind(GENESIS.hash, "tiny", GENESIS.time + 600, 0x1D00FFFF, valid=False)
    update = chain.accept(1, bad)
    assert isinstance(update, Rejected)
    assert "above the target" in update.reason


def test_bits_easier_than_the_network_limit_are_rejected() -> None:
    chain = HeaderChain.for_network("mainnet")
    easy = grind("00" * 32, "easy", 1231006505)  # meets regtest bits, not mainnet's limit
    update = chain.accept(0, easy)
    assert isinstance(update, Rejected)
    assert "easier than the network's limit" in update.reason
    assert chain.tip is None


@pytest.mark.parametrize("bits", [0x20800001, 0x01003456])
def test_bits_encoding_no_target_are_rejected(bits: int) -> None:
    chain = started([])
    bad = grind(GENESIS.hash, "x", GENESIS.time + 600, bits, valid=False)
    assert isinstance(chain.accept(1, bad), Rejected)


def test_run_that_does_not_link_up_is_rejected() -> None:
    chain = started([])
    main = mine(GENESIS, 2, "main")
    other = mine(GENESIS, 2, "other")
    update = chain.accept_many(1, [main[0], other[1]])
    assert isinstance(update, Rejected)
    assert "does not link to the header before it" in update.reason
    assert chain.tip == Tip(0, REGTEST_GENESIS_HASH)


def test_one_bad_header_in_a_run_rejects_the_whole_run() -> None:
    chain = started([])
    good = mine(GENESIS, 2, "main")
    bad = grind(good[1].hash, "bad", good[1].time + 600, valid=False)
    assert isinstance(chain.accept_many(1, [*good, bad]), Rejected)
    assert chain.tip == Tip(0, REGTEST_GENESIS_HASH)


# -- gaps ----------------------------------------------------------------------------------


def test_gap_asks_for_the_missing_headers_then_extends() -> None:
    server = [GENESIS, *mine(GENESIS, 5, "main")]
    chain = started(server[1:2])
    assert chain.accept(4, server[4]) == NeedAncestors(start=2, stop=4)
    update = chain.accept_many(2, server[2:5])
    assert update == Extended(tuple(ChainHeader(h, server[h]) for h in (2, 3, 4)))


def test_gap_over_a_reorged_tip_asks_for_the_window_and_reorgs() -> None:
    ours = [GENESIS, *mine(GENESIS, 3, "ours")]
    theirs = ours[:2] + mine(ours[1], 4, "theirs")  # forks after height 1, tip at 5
    chain = started(ours[1:])
    update, fetched = deliver(chain, 5, theirs[5], theirs)
    assert fetched == [4, 1]  # first the gap, then the whole window
    assert isinstance(update, Reorg)
    assert update.fork_height == 1
    assert update.disconnected == (ours[3].hash, ours[2].hash)
    assert [b.height for b in update.connected] == [2, 3, 4, 5]


def test_fork_below_the_window_is_rejected() -> None:
    ours = [GENESIS, *mine(GENESIS, 8, "ours")]
    theirs = [GENESIS, *mine(GENESIS, 10, "theirs")]  # forks after genesis
    chain = started(ours[1:], max_depth=3)  # window: heights 5..8
    update, fetched = deliver(chain, 10, theirs[10], theirs)
    assert fetched == [9, 6]
    assert isinstance(update, Rejected)
    assert "forks below the window" in update.reason
    assert chain.tip == Tip(8, ours[8].hash)


# -- reorgs --------------------------------------------------------------------------------


def test_one_deep_reorg_to_a_longer_branch() -> None:
    ours = [GENESIS, *mine(GENESIS, 5, "ours")]
    theirs = ours[:5] + mine(ours[4], 2, "theirs")  # forks after 4, tip at 6
    chain = started(ours[1:])
    # The competitor's first block ties: the branch seen first stays.
    assert isinstance(chain.accept(5, theirs[5]), Stale)
    assert chain.tip == Tip(5, ours[5].hash)
    update, fetched = deliver(chain, 6, theirs[6], theirs)
    assert fetched == [1]
    assert update == Reorg(
        fork_height=4,
        old_tip=Tip(5, ours[5].hash),
        new_tip=Tip(6, theirs[6].hash),
        disconnected=(ours[5].hash,),
        connected=(ChainHeader(5, theirs[5]), ChainHeader(6, theirs[6])),
    )
    assert chain.tip == Tip(6, theirs[6].hash)
    assert [chain.hash_at(h) for h in range(7)] == [h.hash for h in theirs]


def test_three_deep_reorg_to_a_longer_branch() -> None:
    ours = [GENESIS, *mine(GENESIS, 10, "ours")]
    theirs = ours[:8] + mine(ours[7], 4, "theirs")  # forks after 7, tip at 11
    chain = started(ours[1:])
    update = chain.accept_many(8, theirs[8:])
    assert isinstance(update, Reorg)
    assert update.fork_height == 7
    assert update.old_tip == Tip(10, ours[10].hash)
    assert update.new_tip == Tip(11, theirs[11].hash)
    assert update.disconnected == (ours[10].hash, ours[9].hash, ours[8].hash)
    assert [b.header for b in update.connected] == theirs[8:]
    # The old branch's blocks are gone: reporting one again is a shorter branch.
    assert isinstance(chain.accept(10, ours[10]), NeedAncestors)
    assert chain.accept(11, theirs[11]) == Duplicate()


def test_shorter_or_equal_competing_branch_is_not_adopted() -> None:
    ours = [GENESIS, *mine(GENESIS, 10, "ours")]
    shorter = mine(ours[7], 2, "shorter")
    equal = mine(ours[7], 3, "equal")
    chain = started(ours[1:])
    for branch in (shorter, equal):
        update = chain.accept_many(8, branch)
        assert isinstance(update, Stale)
        assert "no more work" in update.reason
    assert chain.tip == Tip(10, ours[10].hash)
    assert chain.hash_at(8) == ours[8].hash


def test_most_work_wins_not_most_blocks() -> None:
    chain = HeaderChain()  # no network limit: mix regtest bits with harder ones
    assert isinstance(chain.accept(0, GENESIS), Extended)
    light = mine(GENESIS, 2, "light")  # 2 blocks, work 2 each
    heavy = mine(GENESIS, 1, "heavy", bits=0x201FFFFF)  # 1 block, work 8
    assert isinstance(chain.accept_many(1, light), Extended)
    update = chain.accept_many(1, heavy)
    assert isinstance(update, Reorg)
    assert update.disconnected == (light[1].hash, light[0].hash)
    assert isinstance(chain.accept_many(1, light), Stale)


# -- window --------------------------------------------------------------------------------


def test_window_keeps_the_tip_and_max_depth_blocks_below_it() -> None:
    blocks = mine(GENESIS, 20, "main")
    chain = started(blocks, max_depth=5)
    assert len(chain) == 6
    assert [b.height for b in chain.known_blocks()] == list(range(15, 21))
    assert chain.hash_at(14) is None
    assert chain.hash_at(15) == blocks[14].hash
    # Headers entirely below the window cannot be checked and change nothing.
    assert isinstance(chain.accept_many(1, blocks[:5]), Stale)
    # A run reaching into the window from below is checked where it overlaps.
    assert chain.accept_many(10, blocks[9:]) == Duplicate()


def test_reorg_as_deep_as_the_window_is_followed() -> None:
    ours = [GENESIS, *mine(GENESIS, 10, "ours")]
    theirs = ours[:6] + mine(ours[5], 6, "theirs")  # forks after 5, the window's bottom
    chain = started(ours[1:], max_depth=5)
    update = chain.accept_many(6, theirs[6:])
    assert isinstance(update, Reorg)
    assert update.fork_height == 5
    assert len(update.disconnected) == 5


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_depth must be >= 1, got 0"):
        HeaderChain(max_depth=0)
    with pytest.raises(ValueError, match="pow_limit"):
        HeaderChain(pow_limit=0)
    with pytest.raises(ValueError, match="retarget_interval"):
        HeaderChain(retarget_interval=0)
    with pytest.raises(ValueError, match="unknown network 'bogus'"):
        HeaderChain.for_network("bogus")
    with pytest.raises(ValueError, match="at least one header"):
        HeaderChain().accept_many(0, [])


# -- retarget rule -------------------------------------------------------------------------


def retargeting_chain() -> HeaderChain:
    chain = HeaderChain(pow_limit=POW_LIMITS["regtest"], retarget_interval=4)
    assert isinstance(chain.accept(0, GENESIS), Extended)
    return chain


def test_bits_may_not_change_between_retargets() -> None:
    chain = retargeting_chain()
    harder = grind(GENESIS.hash, "h", GENESIS.time + 600, 0x203FFFFF)
    update = chain.accept(1, harder)
    assert isinstance(update, Rejected)
    assert "between retargets" in update.reason


def test_bits_change_at_a_retarget_by_at_most_four_times_easier() -> None:
    chain = retargeting_chain()
    run = mine(GENESIS, 3, "pre")
    assert isinstance(chain.accept_many(1, run), Extended)
    harder = grind(run[-1].hash, "harder", run[-1].time + 600, 0x201FFFFF)
    assert isinstance(chain.accept(4, harder), Extended)
    more = mine(harder, 3, "more", bits=0x201FFFFF)
    assert isinstance(chain.accept_many(5, more), Extended)
    # 0x207fffff is a little over 4x easier than 0x201fffff.
    too_easy = grind(more[-1].hash, "easy", more[-1].time + 600, REGTEST_BITS)
    update = chain.accept(8, too_easy)
    assert isinstance(update, Rejected)
    assert "more than 4x" in update.reason


def test_a_legitimate_drop_in_difficulty_at_a_retarget_is_followed() -> None:
    chain = retargeting_chain()
    run = mine(GENESIS, 3, "pre")
    assert isinstance(chain.accept_many(1, run), Extended)
    harder = grind(run[-1].hash, "harder", run[-1].time + 600, 0x201FFFFF)
    more = mine(harder, 3, "more", bits=0x201FFFFF)
    assert isinstance(chain.accept_many(4, [harder, *more]), Extended)
    # At the next retarget (height 8) the target eases 2x: allowed.
    easier = grind(more[-1].hash, "easier", more[-1].time + 600, 0x203FFFFF)
    assert chain.accept(8, easier) == Extended((ChainHeader(8, easier),))
    # Between retargets it must stay.
    (after,) = mine(easier, 1, "after", bits=0x203FFFFF)
    assert isinstance(chain.accept(9, after), Extended)


def test_a_chains_first_run_is_checked_against_the_retarget_rule() -> None:
    def empty() -> HeaderChain:
        return HeaderChain(pow_limit=POW_LIMITS["regtest"], retarget_interval=4)

    harder = grind(GENESIS.hash, "h", GENESIS.time + 600, 0x203FFFFF)
    update = empty().accept_many(0, [GENESIS, harder])
    assert isinstance(update, Rejected)
    assert "between retargets" in update.reason
    # Adopted from height 3: the change at height 4 is a retarget, the one before is not.
    (three,) = mine(GENESIS, 1, "three")
    at_four = grind(three.hash, "four", three.time + 600, 0x201FFFFF)
    assert isinstance(empty().accept_many(3, [three, at_four]), Extended)
    (two,) = mine(GENESIS, 1, "two")
    at_three = grind(two.hash, "three", two.time + 600, 0x201FFFFF)
    update = empty().accept_many(2, [two, at_three])
    assert isinstance(update, Rejected)
    assert "at height 3 changes bits" in update.reason
    # More than 4x easier at the retarget, in the first run too.
    hard = grind(GENESIS.hash, "hard", GENESIS.time + 600, 0x201FFFFF)
    too_easy = grind(hard.hash, "easy", hard.time + 600, REGTEST_BITS)
    update = empty().accept_many(3, [hard, too_easy])
    assert isinstance(update, Rejected)
    assert "more than 4x" in update.reason
    # The first header itself has no parent to compare with.
    assert isinstance(empty().accept(5, hard), Extended)


def _mainnet_parent(height: int, bits: int) -> KnownBlock:
    """A block the mainnet genesis header links to, at ``height``, with ``bits``."""
    return KnownBlock(height, "00" * 32, "11" * 32, bits)


MAINNET = BlockHeader.parse(MAINNET_GENESIS)  # real proof of work at bits 1d00ffff


@pytest.mark.parametrize("network", ["mainnet", "signet"])
def test_for_network_applies_the_retarget_rule_where_the_network_has_one(
    network: str,
) -> None:
    # Between retargets: the bits may not change (the parent says 1d00fffe).
    chain = HeaderChain.for_network(network, [_mainnet_parent(99, 0x1D00FFFE)])
    update = chain.accept(100, MAINNET)
    assert isinstance(update, Rejected)
    assert "between retargets" in update.reason
    # At a retarget (every 2016 blocks): easier by exactly 4x is allowed ...
    chain = HeaderChain.for_network(network, [_mainnet_parent(2015, 0x1C3FFFC0)])
    assert chain.accept(2016, MAINNET) == Extended((ChainHeader(2016, MAINNET),))
    # ... by a little more is not.
    chain = HeaderChain.for_network(network, [_mainnet_parent(4031, 0x1C3FFFBF)])
    update = chain.accept(4032, MAINNET)
    assert isinstance(update, Rejected)
    assert "more than 4x" in update.reason


@pytest.mark.parametrize("network", ["testnet", "testnet4", "regtest"])
def test_for_network_has_no_retarget_rule_on_test_networks(network: str) -> None:
    chain = HeaderChain.for_network(network, [_mainnet_parent(99, 0x1D00FFFE)])
    assert chain.accept(100, MAINNET) == Extended((ChainHeader(100, MAINNET),))
    chain = HeaderChain.for_network(network, [_mainnet_parent(4031, 0x1C3FFFBF)])
    assert isinstance(chain.accept(4032, MAINNET), Extended)


def test_for_network_uses_the_networks_proof_of_work_limit() -> None:
    # Regtest-easy bits pass on regtest and are above every other network's limit.
    regtest_easy = grind(GENESIS.hash, "x", GENESIS.time + 600)
    for network in ("mainnet", "testnet", "testnet4", "signet"):
        update = HeaderChain.for_network(network).accept(1, regtest_easy)
        assert isinstance(update, Rejected), network
        assert "easier than the network's limit" in update.reason
    assert isinstance(HeaderChain.for_network("regtest").accept(1, regtest_easy),
                      Extended)
    # Signet's limit is easier than mainnet's: bits between the two pass on signet only.
    between = 0x1E0377AE  # signet's powLimit in compact form
    assert target_from_bits(between) == POW_LIMITS["signet"]
    assert POW_LIMITS["mainnet"] < target_from_bits(between)


# -- seeding and events --------------------------------------------------------------------


def test_chain_resumes_from_stored_block_events() -> None:
    blocks = [GENESIS, *mine(GENESIS, 4, "main")]
    stored = [block_event_data(h, header) for h, header in enumerate(blocks)]
    chain = HeaderChain.for_network("regtest", [KnownBlock.from_event_data(d) for d in stored])
    assert chain.tip == Tip(4, blocks[4].hash)
    (b5,) = mine(blocks[4], 1, "main-next")
    assert chain.accept(5, b5) == Extended((ChainHeader(5, b5),))


def test_seed_must_be_consecutive_and_linked() -> None:
    blocks = [GENESIS, *mine(GENESIS, 2, "main")]
    known = [KnownBlock.from_header(h, header) for h, header in enumerate(blocks)]
    with pytest.raises(ValueError, match="consecutive and linked"):
        HeaderChain([known[0], known[2]])


def test_block_event_data() -> None:
    assert block_event_data(0, GENESIS) == {
        "height": 0,
        "hash": REGTEST_GENESIS_HASH,
        "prev_hash": "00" * 32,
        "time": 1296688602,
        "bits": "207fffff",
    }


def test_reorg_event_data() -> None:
    ours = [GENESIS, *mine(GENESIS, 2, "ours")]
    theirs = ours[:1] + mine(GENESIS, 3, "theirs")
    chain = started(ours[1:])
    update = chain.accept_many(1, theirs[1:])
    assert isinstance(update, Reorg)
    assert reorg_event_data(update) == {
        "fork_height": 0,
        "old_tip": {"height": 2, "hash": ours[2].hash},
        "new_tip": {"height": 3, "hash": theirs[3].hash},
        "disconnected": [ours[2].hash, ours[1].hash],
        "connected": [theirs[1].hash, theirs[2].hash, theirs[3].hash],
    }
