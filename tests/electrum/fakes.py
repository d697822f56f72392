"""In-memory stand-ins for the pool's edges: a session that answers from a function, and a
``PoolHost`` over such servers. No sockets: the pool's own logic runs for real on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import anyio

from stream.electrum import PoolConfig, ServerState, parse_server
from stream.electrum.host import Candidates
from stream.electrum.upstream import Upstream

Answer = Callable[[str, Sequence[Any]], Any]


def echo(method: str, params: Sequence[Any]) -> Any:
    return [method, *params]


class FakeSession:
    """What ``Upstream`` uses of an ``ElectrumSession``; ``answer(method, params)`` gives
    each call's result (an exception instance stands for a per-call error)."""

    def __init__(self, answer: Answer = echo) -> None:
        self.answer = answer
        self.is_closing = False
        self.protocol = "1.4"
        self.batches: list[list[tuple[str, Sequence[Any]]]] = []

    async def request(self, method: str, params: Sequence[Any], *, time_limit: float) -> Any:
        return self.answer(method, params)

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, time_limit: float
    ) -> list[Any]:
        self.batches.append(list(calls))
        return [self.answer(method, params) for method, params in calls]

    async def close(self) -> None:
        self.is_closing = True


def _ignore(*args: object) -> None:
    pass


def connected(url: str, config: PoolConfig, answer: Answer = echo, *,
              height: int | None = None) -> Upstream:
    """A configured server already connected to a ``FakeSession``."""
    upstream = Upstream(parse_server(url), config, on_notification=_ignore, on_change=_ignore)
    upstream.session = FakeSession(answer)  # type: ignore[assignment]
    upstream.state = ServerState.CONNECTED
    upstream.tip_height = height
    return upstream


class FakeHost:
    """A ``PoolHost`` over servers that are all open already."""

    def __init__(self, servers: Sequence[Upstream], config: PoolConfig) -> None:
        self.config = config
        self.servers = list(servers)
        self.grown = 0
        self.acquired: list[AbstractSet[Upstream]] = []

    def check_open(self) -> None:
        pass

    def active_servers(self) -> Sequence[Upstream]:
        return tuple(self.servers)

    def grow(self, count: int) -> None:
        self.grown += count

    def open_servers(self, count: int) -> None:
        pass

    async def wait_changed(self) -> None:
        await anyio.sleep_forever()

    async def acquire(self, exclude: AbstractSet[Upstream], candidates: Candidates) -> Upstream:
        self.acquired.append(frozenset(exclude))
        found = candidates(exclude)
        if not found:
            raise AssertionError("the fake host has no server to wait for")
        return min(found, key=lambda u: u.in_flight)


def sent_calls(upstream: Upstream) -> list[tuple[str, Sequence[Any]]]:
    """Every call the server's fake session received, in order."""
    assert isinstance(upstream.session, FakeSession)
    return [call for batch in upstream.session.batches for call in batch]
