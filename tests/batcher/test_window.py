"""The pure window core, driven synchronously with made-up times (no sockets, no clock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.events import Event
from batcher.window import ClosedWindow, WindowConfig, WindowLimits, Windows


def ev(kind: str = "address", n: int = 0) -> Event:
    return Event(type=kind, key=f"k{n}", data={"n": n}, ts=1_700_000_000.0 + n, id=f"{kind}-{n}")


def test_window_flushes_when_tenth_event_arrives() -> None:
    windows = Windows()
    for n in range(9):
        assert windows.add(ev(n=n), now=0.01 * n) == []
    closed = windows.add(ev(n=9), now=0.1)
    assert len(closed) == 1
    assert closed[0].reason == "size"
    assert [e.id for e in closed[0].events] == [f"address-{n}" for n in range(10)]
    assert windows.next_deadline() is None
    assert windows.pending_events == 0


def test_eleventh_event_opens_a_new_window() -> None:
    windows = Windows()
    for n in range(10):
        windows.add(ev(n=n), now=0.0)
    assert windows.add(ev(n=10), now=0.2) == []
    assert windows.next_deadline() == pytest.approx(0.7)


def test_window_flushes_500_ms_after_its_first_event() -> None:
    windows = Windows()
    windows.add(ev(n=0), now=10.0)
    windows.add(ev(n=1), now=10.3)
    assert windows.next_deadline() == pytest.approx(10.5)
    assert windows.poll(10.499) == []
    closed = windows.poll(10.5)
    assert [(c.reason, c.count, c.opened_at, c.closed_at) for c in closed] == [
        ("time", 2, 10.0, 10.5)
    ]
    assert windows.poll(11.0) == []


def test_three_address_events_become_one_batch_of_three() -> None:
    windows = Windows()
    for n in range(3):
        windows.add(ev("address", n), now=0.1 * n)
    (closed,) = windows.poll(0.5)
    assert closed.type == "address"
    assert closed.count == 3


def test_event_after_the_deadline_does_not_join_the_expired_window() -> None:
    windows = Windows()
    windows.add(ev(n=0), now=0.0)
    # Nobody polled at 0.5; the event at 0.7 must start a new window, not extend the old one.
    closed = windows.add(ev(n=1), now=0.7)
    assert [(c.reason, [e.id for e in c.events]) for c in closed] == [("time", ["address-0"])]
    assert windows.pending_events == 1
    assert windows.next_deadline() == pytest.approx(1.2)


def test_mixed_types_have_separate_windows() -> None:
    windows = Windows()
    windows.add(ev("address", 0), now=0.0)
    windows.add(ev("block", 1), now=0.1)
    windows.add(ev("address", 2), now=0.2)
    assert windows.open_types == ("address", "block")
    # Eight more address events fill the address window; the block window stays open.
    closed = [c for n in range(3, 11) for c in windows.add(ev("address", n), now=0.3)]
    assert [(c.type, c.count, c.reason) for c in closed] == [("address", 10, "size")]
    assert list(windows.open_types) == ["block"]
    closed = windows.poll(0.6)
    assert [(c.type, c.count, c.reason) for c in closed] == [("block", 1, "time")]


def test_windows_closing_together_come_out_oldest_first() -> None:
    windows = Windows()
    windows.add(ev("fees", 0), now=0.2)
    windows.add(ev("block", 1), now=0.1)
    windows.add(ev("server", 2), now=0.3)
    closed = windows.poll(5.0)
    assert [c.type for c in closed] == ["block", "fees", "server"]


def test_drain_flushes_every_open_window_at_shutdown() -> None:
    windows = Windows()
    windows.add(ev("address", 0), now=0.1)
    windows.add(ev("block", 1), now=0.2)
    windows.add(ev("address", 2), now=0.3)
    closed = windows.drain(now=0.35)
    assert [(c.type, c.count, c.reason, c.closed_at) for c in closed] == [
        ("address", 2, "shutdown", 0.35),
        ("block", 1, "shutdown", 0.35),
    ]
    assert windows.drain(now=2.0) == []
    assert windows.next_deadline() is None


def test_drain_flushes_in_the_order_the_windows_opened() -> None:
    # Names sort the other way round, and deadlines in yet another order (per-type ages):
    # only the opening order gives the seqs a live run would have given.
    config = WindowConfig(
        per_type={"server": WindowLimits(max_age=60.0), "block": WindowLimits(max_age=0.05)}
    )
    windows = Windows(config)
    windows.add(ev("server", 0), now=1.0)
    windows.add(ev("fees", 1), now=1.01)
    windows.add(ev("block", 2), now=1.02)
    windows.add(ev("address", 3), now=1.03)
    windows.add(ev("fees", 4), now=1.04)
    closed = windows.drain(now=1.05)
    assert [(c.type, c.opened_at, c.count) for c in closed] == [
        ("server", 1.0, 1),
        ("fees", 1.01, 2),
        ("block", 1.02, 1),
        ("address", 1.03, 1),
    ]
    assert {c.reason for c in closed} == {"shutdown"}
    assert windows.pending_events == 0


def test_per_type_limits_and_a_type_that_flushes_at_once() -> None:
    config = WindowConfig(
        per_type={
            "block": WindowLimits(max_events=1),
            "fees": WindowLimits(max_events=3, max_age=2),
        }
    )
    windows = Windows(config)
    (block,) = windows.add(ev("block", 0), now=0.0)
    assert (block.count, block.reason, block.opened_at, block.closed_at) == (1, "size", 0.0, 0.0)
    windows.add(ev("fees", 1), now=0.0)
    windows.add(ev("fees", 2), now=1.0)
    assert windows.poll(1.9) == []
    (fees,) = windows.add(ev("fees", 3), now=1.95)
    assert (fees.count, fees.reason) == (3, "size")
    # max_age=0 also means "at once".
    windows = Windows(WindowConfig(per_type={"server": WindowLimits(max_age=0)}))
    assert len(windows.add(ev("server", 4), now=3.0)) == 1


def test_batching_off_makes_every_event_its_own_batch() -> None:
    windows = Windows(WindowConfig(enabled=False, per_type={"address": WindowLimits(50, 9.0)}))
    closed = [c for n in range(5) for c in windows.add(ev("address", n), now=float(n))]
    assert [c.count for c in closed] == [1, 1, 1, 1, 1]
    assert windows.next_deadline() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_events": 0}, "max_events must be >= 1, got 0"),
        ({"max_events": 2.5}, "max_events must be an integer"),
        ({"max_events": True}, "max_events must be an integer"),
        ({"max_age": -0.1}, "max_age must be a finite number >= 0, got -0.1"),
        ({"max_age": float("inf")}, "max_age must be a finite number >= 0"),
        ({"max_age": "1"}, "max_age must be a number of seconds"),
    ],
)
def test_limits_are_validated_with_clear_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        WindowLimits(**kwargs)  # type: ignore[arg-type]


def test_config_rejects_bad_per_type_entries() -> None:
    with pytest.raises(ValueError, match=r"per_type\['block'\] must be a WindowLimits"):
        WindowConfig(per_type={"block": 5})  # type: ignore[dict-item]


# -- properties ------------------------------------------------------------------------------

TYPES = ["address", "block", "fees"]
steps = st.lists(
    st.tuples(
        st.sampled_from([*TYPES, "poll"]),
        st.floats(min_value=0, max_value=0.4, allow_nan=False),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(
    steps=steps,
    max_events=st.integers(min_value=1, max_value=6),
    max_age=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
)
def test_every_event_lands_in_exactly_one_window_in_order(
    steps: list[tuple[str, float]], max_events: int, max_age: float
) -> None:
    windows = Windows(WindowConfig(default=WindowLimits(max_events, max_age)))
    now = 0.0
    arrivals: dict[str, float] = {}
    sent: list[Event] = []
    closed: list[ClosedWindow] = []
    for n, (kind, dt) in enumerate(steps):
        now += dt
        if kind == "poll":
            closed += windows.poll(now)
            continue
        event = ev(kind, n)
        arrivals[event.id] = now
        sent.append(event)
        closed += windows.add(event, now)
        deadline = windows.next_deadline()
        assert deadline is None or deadline > now
    closed += windows.drain(now + 10)
    got = [e for window in closed for e in window.events]
    assert sorted(e.id for e in got) == sorted(e.id for e in sent)
    for kind in TYPES:
        assert [e.id for e in got if e.type == kind] == [e.id for e in sent if e.type == kind]
    for window in closed:
        assert 1 <= window.count <= max_events
        assert all(e.type == window.type for e in window.events)
        # No event joins a window after that window's deadline.
        assert all(
            arrivals[e.id] < window.opened_at + max_age or max_age == 0 for e in window.events
        )
        if window.reason == "size":
            assert window.count == max_events or max_age == 0
        if window.reason == "time":
            assert window.closed_at >= window.opened_at + max_age
