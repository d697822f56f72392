"""Reading a ``blockchain.block.headers`` answer (protocol 1.6's list or 1.4's
concatenated hex, ``count`` optional) and cutting a fetched run at its first broken link."""

from __future__ import annotations

import pytest

from stream.producers.block_runs import linked_run, parse_headers_result
from stream.producers.headers import BlockHeader, KnownBlock
from tests.fake_electrum import grind_header


def chain(n: int, prev: str = "00" * 32, salt: int = 0) -> list[BlockHeader]:
    """``n`` linked regtest headers on ``prev``."""
    out: list[BlockHeader] = []
    for i in range(n):
        raw = grind_header(out[-1].hash if out else prev, time=1_700_000_000 + i + salt,
                           meets_target=True)
        out.append(BlockHeader.parse(raw))
    return out


HEADERS = chain(3)
HEXES = [h.hex() for h in HEADERS]


# -- parse_headers_result ------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_concatenated_hex_answer_splits_into_its_headers(n: int) -> None:
    assert parse_headers_result({"count": n, "hex": "".join(HEXES[:n])}) == HEADERS[:n]


def test_count_is_optional_in_either_form() -> None:
    assert parse_headers_result({"headers": HEXES}) == HEADERS
    assert parse_headers_result({"hex": "".join(HEXES[:2])}) == HEADERS[:2]
    assert parse_headers_result({"headers": []}) == []


def test_a_count_that_disagrees_with_the_headers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^'count' is 2 but 1 headers came$"):
        parse_headers_result({"count": 2, "headers": HEXES[:1]})


@pytest.mark.parametrize(("answer", "kind"), [(None, "NoneType"), ([], "list"),
                                              ("".join(HEXES), "str")])
def test_an_answer_that_is_not_an_object_is_refused(answer: object, kind: str) -> None:
    with pytest.raises(ValueError, match=rf"^expected an object, got {kind}$"):
        parse_headers_result(answer)


@pytest.mark.parametrize("items", ["".join(HEXES), {"0": HEXES[0]}, None])
def test_headers_that_are_not_a_list_are_refused(items: object) -> None:
    with pytest.raises(ValueError, match=r"^'headers' is not a list$"):
        parse_headers_result({"headers": items})


@pytest.mark.parametrize("text", [HEXES[0][:-2], "".join(HEXES) + "00", 12, None, HEXES])
def test_hex_that_is_not_a_whole_number_of_headers_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"^'hex' is not a whole number of headers$"):
        parse_headers_result({"hex": text})


def test_an_answer_with_neither_form_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^neither 'headers' nor 'hex' in the answer$"):
        parse_headers_result({"count": 1, "max": 2016})


# -- linked_run ----------------------------------------------------------------------------


def test_a_linked_run_becomes_known_blocks_at_consecutive_heights() -> None:
    assert linked_run(7, HEADERS) == [KnownBlock(7 + i, h.hash, h.prev_hash, h.bits)
                                      for i, h in enumerate(HEADERS)]


def test_the_first_header_of_a_run_is_taken_whatever_its_parent() -> None:
    # Whether the run attaches to the chain is the chain's question, not this one's.
    orphan = chain(1, prev="ab" * 32)
    assert linked_run(0, orphan) == [KnownBlock(0, orphan[0].hash, "ab" * 32, orphan[0].bits)]
    assert linked_run(5, []) == []


def test_a_run_is_cut_at_the_first_header_that_does_not_link() -> None:
    stranger = chain(1, prev="cd" * 32)[0]
    run = [*HEADERS[:2], stranger, HEADERS[2]]
    assert [b.hash for b in linked_run(3, run)] == [HEADERS[0].hash, HEADERS[1].hash]
    assert [b.height for b in linked_run(3, run)] == [3, 4]
    # Linking to an older header of the run is not linking to the one before it.
    skip = [HEADERS[0], HEADERS[1], chain(1, prev=HEADERS[0].hash, salt=50)[0]]
    assert len(linked_run(0, skip)) == 2
