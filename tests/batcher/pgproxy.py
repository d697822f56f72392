"""A TCP proxy in front of PostgreSQL that a test can take down and bring back.

Down: every open connection is cut and new ones are closed at once (what clients see when
the server goes away), without disturbing other users of the shared PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketStream, TaskGroup


class PgProxy:
    def __init__(self, tg: TaskGroup, target_port: int) -> None:
        self._tg = tg
        self._target_port = target_port
        self.port = 0
        self.up = True
        self._scopes: set[anyio.CancelScope] = set()
        #: Cut this many connections right after relaying a COMMIT, before its answer.
        self.cut_after_commit = 0
        self.commits_cut = 0

    def down(self) -> None:
        self.up = False
        for scope in list(self._scopes):
            scope.cancel()

    def bring_up(self) -> None:
        self.up = True

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            if not self.up:
                return
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self._target_port)
            except OSError:
                return
            async with upstream:
                with anyio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._pump_queries, client, upstream, tg.cancel_scope)
                            tg.start_soon(_pump, upstream, client, tg.cancel_scope)
                    finally:
                        self._scopes.discard(scope)

    async def _pump_queries(
        self, src: SocketStream, dst: SocketStream, scope: anyio.CancelScope
    ) -> None:
        try:
            async for chunk in src:
                await dst.send(chunk)
                if self.cut_after_commit and b"COMMIT" in chunk.upper():
                    self.cut_after_commit -= 1
                    self.commits_cut += 1
                    # Let the server read and run the COMMIT, then cut: the client never
                    # learns that it committed.
                    await anyio.sleep(0.05)
                    break
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()


async def _pump(src: SocketStream, dst: SocketStream, scope: anyio.CancelScope) -> None:
    try:
        async for chunk in src:
            await dst.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    scope.cancel()


@asynccontextmanager
async def pg_proxy(target_port: int = 5432) -> AsyncIterator[PgProxy]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        proxy = PgProxy(tg, target_port)
        proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            proxy.down()
            tg.cancel_scope.cancel()
