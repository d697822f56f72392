"""The wire form of events and batches: the fields, their order and the UTC timestamps."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import orjson
import pytest

from batcher.events import EVENT_TYPES, Batch, Event, format_ts, new_event_id

# 2023-11-14T22:13:20Z plus a fraction that a float holds exactly.
TS = 1_700_000_000.75


@pytest.fixture
def new_york_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC-5 (a POSIX rule: no tz database needed)."""
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_timestamps_are_iso_8601_utc_with_milliseconds() -> None:
    assert format_ts(TS) == "2023-11-14T22:13:20.750Z"
    assert format_ts(0.5) == "1970-01-01T00:00:00.500Z"
    assert format_ts(1_700_000_000) == "2023-11-14T22:13:20.000Z"


def test_milliseconds_are_truncated_not_rounded() -> None:
    assert format_ts(1_700_000_000.999_75) == "2023-11-14T22:13:20.999Z"


def test_timestamps_stay_utc_whatever_the_server_time_zone(new_york_time: None) -> None:
    assert time.localtime(TS).tm_hour == 17  # the zone did change
    assert format_ts(TS) == "2023-11-14T22:13:20.750Z"


def test_an_event_on_the_wire_has_its_five_fields_in_order() -> None:
    event = Event("address", "bc1qexample", {"received_sats": 5}, TS, id="e1")
    assert orjson.dumps(event.to_dict()) == (
        b'{"id":"e1","type":"address","key":"bc1qexample",'
        b'"ts":"2023-11-14T22:13:20.750Z","data":{"received_sats":5}}'
    )


def test_a_batch_on_the_wire_has_its_six_fields_in_order_and_counts_its_events() -> None:
    events = (Event("block", "101", {"height": 101}, TS, id="a"),
              Event("block", "102", {"height": 102}, TS + 1, id="b"))
    batch = Batch(7, "epoch-1", "block", events, TS + 2)
    assert batch.count == 2
    assert orjson.dumps(batch.to_dict()) == (
        b'{"seq":7,"epoch":"epoch-1","type":"block","count":2,"events":['
        b'{"id":"a","type":"block","key":"101","ts":"2023-11-14T22:13:20.750Z",'
        b'"data":{"height":101}},'
        b'{"id":"b","type":"block","key":"102","ts":"2023-11-14T22:13:21.750Z",'
        b'"data":{"height":102}}],'
        b'"ts":"2023-11-14T22:13:22.750Z"}'
    )


def test_an_empty_batch_counts_zero() -> None:
    assert Batch(1, "e", "fees", (), TS).to_dict()["count"] == 0


def test_the_wire_form_is_a_copy_that_cannot_change_the_shared_event() -> None:
    event = Event("fees", "fees", {"fastest": 12}, TS, id="f")
    wire = event.to_dict()
    wire["data"]["fastest"] = 1
    assert event.data == {"fastest": 12}
    assert event.to_dict()["data"] == {"fastest": 12}


def test_events_get_fresh_unique_hex_ids_unless_given_one() -> None:
    ids = {Event("block", "1", {}, TS).id for _ in range(100)} | {new_event_id()}
    assert len(ids) == 101
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert Event("block", "1", {}, TS, id="mine").id == "mine"


def test_the_event_types_are_the_documented_six() -> None:
    assert frozenset({"block", "reorg", "address", "tx.large", "fees", "server"}) == EVENT_TYPES
