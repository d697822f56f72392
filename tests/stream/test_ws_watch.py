"""``WsWatch``, the one watchdog of every WebSocket connection: pure, with a given clock."""

from __future__ import annotations

import anyio
import pytest

from stream.transports.ws_watch import WsWatch


class Conn:
    def __init__(self, sending_since: float | None = None) -> None:
        self.sending_since = sending_since
        self.let_go_calls = 0
        self.goodbyes = 0

    def let_go(self) -> None:
        self.let_go_calls += 1

    def say_goodbye(self) -> None:
        self.goodbyes += 1


def test_only_a_send_without_progress_for_longer_than_the_timeout_is_let_go() -> None:
    watch = WsWatch(10.0, anyio.Event())
    idle, reading, stalled = Conn(None), Conn(95.0), Conn(89.0)
    for conn in (idle, reading, stalled):
        watch.add(conn)
    assert watch.check(now=100.0) == 1
    assert (idle.let_go_calls, reading.let_go_calls, stalled.let_go_calls) == (0, 0, 1)
    assert len(watch) == 2
    assert watch.check(now=100.0) == 0  # let go once, not at every check
    watch.discard(stalled)  # its handler's own discard, later: harmless
    watch.discard(idle)
    assert len(watch) == 1


@pytest.mark.anyio
async def test_the_shutdown_reaches_every_connection_and_any_that_comes_later() -> None:
    shutting_down = anyio.Event()
    watch = WsWatch(1000.0, shutting_down)
    early = [Conn() for _ in range(3)]
    for conn in early:
        watch.add(conn)
    async with anyio.create_task_group() as tg:
        await tg.start(watch.run)
        shutting_down.set()
        with anyio.fail_after(5):
            while any(conn.goodbyes == 0 for conn in early):
                await anyio.sleep(0.01)
        late = Conn()
        watch.add(late)  # accepted while the goodbyes were going out
        assert late.goodbyes == 1
        tg.cancel_scope.cancel()
    assert [conn.goodbyes for conn in early] == [1, 1, 1]


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="send_timeout must be > 0"):
        WsWatch(0, anyio.Event())
