"""Window edges that a user of the batch timestamps and of shutdown relies on."""

from __future__ import annotations

import pytest

from batcher.events import Event
from batcher.window import WindowConfig, WindowLimits, Windows


def ev(kind: str, n: int) -> Event:
    return Event(type=kind, key=f"k{n}", data={"n": n}, ts=1_700_000_000.0 + n, id=f"{kind}-{n}")


def test_a_window_closed_by_size_is_stamped_with_the_time_of_its_last_event() -> None:
    windows = Windows(WindowConfig(default=WindowLimits(max_events=3, max_age=0.5)))
    windows.add(ev("address", 0), now=10.0)
    windows.add(ev("address", 1), now=10.1)
    [closed] = windows.add(ev("address", 2), now=10.2)
    assert (closed.reason, closed.opened_at, closed.closed_at) == ("size", 10.0, 10.2)


def test_an_event_arriving_exactly_at_another_windows_deadline_closes_that_window() -> None:
    windows = Windows(WindowConfig(default=WindowLimits(max_events=10, max_age=0.5)))
    windows.add(ev("fees", 0), now=1.0)  # due at 1.5
    closed = windows.add(ev("address", 1), now=1.5)
    assert [(c.type, c.reason, c.closed_at) for c in closed] == [("fees", "time", 1.5)]
    assert windows.next_deadline() == 2.0  # the address window it opened


def test_windows_keep_working_after_a_drain() -> None:
    windows = Windows(WindowConfig(default=WindowLimits(max_events=2, max_age=0.5)))
    windows.add(ev("address", 0), now=1.0)
    assert [c.reason for c in windows.drain(now=1.1)] == ["shutdown"]
    assert windows.next_deadline() is None
    assert windows.add(ev("address", 1), now=2.0) == []  # a new window after the drain
    assert windows.next_deadline() == 2.5
    [closed] = windows.add(ev("address", 2), now=2.1)
    assert [e.id for e in closed.events] == ["address-1", "address-2"]


@pytest.mark.parametrize("key", [5, "", None])
def test_per_type_limits_need_a_type_name(key: object) -> None:
    with pytest.raises(ValueError, match="per_type keys must be event type names"):
        WindowConfig(per_type={key: WindowLimits()})  # type: ignore[dict-item]
