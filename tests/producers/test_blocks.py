"""The block producer's pure parts: reading header runs, and the window to resume with."""

from __future__ import annotations

import pytest

from batcher.events import Event
from stream.producers.blocks import parse_headers_result, seed_window
from stream.producers.headers import BlockHeader, KnownBlock, Tip, block_event_data
from tests.fake_electrum import grind_header


def chain(n: int, prev: str = "00" * 32, salt: int = 0) -> list[BlockHeader]:
    """``n`` linked regtest headers on ``prev``."""
    out: list[BlockHeader] = []
    for i in range(n):
        raw = grind_header(out[-1].hash if out else prev, time=1_700_000_000 + i + salt,
                           meets_target=True)
        out.append(BlockHeader.parse(raw))
    return out


def events(start: int, headers: list[BlockHeader]) -> list[Event]:
    """Stored block events, newest first (as ``recent_blocks`` returns them)."""
    return [Event("block", str(start + i), block_event_data(start + i, h), 0.0)
            for i, h in enumerate(headers)][::-1]


def test_parse_headers_result_reads_protocol_1_6_and_1_4_answers() -> None:
    headers = chain(3)
    hexes = [h.hex() for h in headers]
    assert parse_headers_result({"count": 3, "max": 2016, "headers": hexes}) == headers
    assert parse_headers_result({"count": 3, "max": 2016, "hex": "".join(hexes)}) == headers
    assert parse_headers_result({"count": 0, "max": 2016, "headers": []}) == []


@pytest.mark.parametrize("bad", [
    None, [], {"count": 1}, {"headers": "ab"}, {"hex": "ab" * 81},
    {"count": 2, "headers": ["00" * 80]}, {"headers": ["zz" * 80]},
])
def test_parse_headers_result_rejects_malformed_answers(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_headers_result(bad)


def test_seed_window_walks_back_from_the_stored_tip_skipping_an_orphaned_branch() -> None:
    main = chain(5)  # heights 10..14
    orphan = chain(2, prev=main[2].hash, salt=100)  # heights 13..14, reorged out
    stored = events(10, main[:3]) + events(13, orphan)  # orphan stored last (newest)
    stored = events(13, main[3:]) + stored  # then the reorg's blocks
    window, anchor = seed_window((14, main[4].hash), stored)
    assert anchor is None
    assert window == [KnownBlock.from_header(10 + i, h) for i, h in enumerate(main)]


def test_seed_window_is_bounded_by_max_depth() -> None:
    main = chain(6)
    window, _ = seed_window((5, main[5].hash), events(0, main), max_depth=2)
    assert [b.height for b in window] == [3, 4, 5]


def test_seed_window_without_a_stored_tip_uses_the_newest_event() -> None:
    main = chain(3)
    window, anchor = seed_window(None, events(7, main))
    assert ([b.height for b in window], anchor) == ([7, 8, 9], None)
    assert seed_window(None, []) == ([], None)


def test_seed_window_names_a_stored_tip_whose_event_is_gone() -> None:
    main = chain(3)
    assert seed_window((9, "ab" * 32), events(7, main[:2])) == ([], Tip(9, "ab" * 32))
    # A stored event at another height than the tip's is not trusted either.
    assert seed_window((5, main[2].hash), events(7, main)) == ([], Tip(5, main[2].hash))


def test_seed_window_ignores_events_it_cannot_read() -> None:
    main = chain(2)
    junk = Event("block", "x", {"height": "?"}, 0.0)
    window, _ = seed_window((1, main[1].hash), [junk, *events(0, main)])
    assert [b.height for b in window] == [0, 1]
