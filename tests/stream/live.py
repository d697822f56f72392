"""A real Chainwire server in the test's own event loop, on a real port, over PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette

from batcher.events import Event
from stream.app import create_app
from stream.services import Limits, Services
from stream.serving import GracefulServer, uvicorn_config
from stream.settings import Settings
from tests.batcher.conftest import fresh_pg_database, pg_url_for
from tests.bed.electrumx import ElectrumXServer
from tests.server_process import free_port

__all__ = ["Live", "in_process", "live_server", "serving"]


class Live:
    def __init__(self, services: Services, port: int) -> None:
        self.services = services
        self.port = port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/ws"

    async def emit(self, *events: Event) -> None:
        for event in events:
            await self.services.runner.submit(event)


@asynccontextmanager
async def serving(app: Starlette, port: int) -> AsyncIterator[GracefulServer]:
    """``app`` served on ``port`` in this event loop by the production server class, so
    leaving (or setting ``should_exit``) runs ``chainwire serve``'s own shutdown."""
    config = uvicorn_config(app, host="127.0.0.1", port=port,
                            trusted_proxies=app.state.settings.trusted_proxies)
    server = GracefulServer(config, app)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield server
        finally:
            server.should_exit = True


@asynccontextmanager
async def live_server(servers: list[ElectrumXServer], limits: Limits | None = None, *,
                      producers: bool = False,
                      lease_clock: Callable[[], float] | None = None,
                      **settings: Any) -> AsyncIterator[Live]:
    """``producers=False`` (the default here): the test's own ``emit`` is the only source
    of events, so it can count batches; ``True``: the real chain from the bed as well.
    ``lease_clock``: the watch leases' clock (a test's own, to end a lease at once)."""
    async with fresh_pg_database() as name:
        config = Settings(network="regtest", servers=tuple(s.tcp_url for s in servers),
                          database_url=pg_url_for(name), **settings)
        app = create_app(config, limits, producers=producers, lease_clock=lease_clock)
        port = free_port()
        async with serving(app, port):
            yield Live(app.state.services, port)


@asynccontextmanager
async def in_process(tmp_path: Path, limits: Limits) -> AsyncIterator[tuple[Services, int]]:
    """A server on SQLite with no Electrum server and no producers: for tests of the
    streaming edge alone. Yields its services and port."""
    settings = Settings(network="regtest", servers=("tcp://127.0.0.1:9",),
                        database_url=f"sqlite:///{tmp_path / 'cw.db'}")
    app = create_app(settings, limits, producers=False)
    port = free_port()
    async with serving(app, port):
        yield app.state.services, port
