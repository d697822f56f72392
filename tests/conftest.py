"""Shared fixtures: the anyio backend and the real-Electrum test bed (see tests/bed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.bed.bed import TipWaiter, ensure_running, startup_times
from tests.bed.bed import wait_for_tip as _wait_for_tip
from tests.bed.electrumx import (
    DEFAULT_PAD_WAIT,
    BedCerts,
    ElectrumXServer,
    make_certs,
    start_all,
)
from tests.bed.node import RegtestNode


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiorpcx runs on asyncio only


@pytest.fixture(scope="session")
def bed_certs(tmp_path_factory: pytest.TempPathFactory) -> BedCerts:
    """A CA and a certificate for 127.0.0.1, used by every ElectrumX server's SSL port."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def regtest_node() -> Iterator[RegtestNode]:
    """The session's regtest node, 101 blocks mined, serving JSON-RPC on 127.0.0.1."""
    t0 = time.monotonic()
    node = RegtestNode().start()
    startup_times["node"] = time.monotonic() - t0
    yield node
    node.stop()


@pytest.fixture(scope="session")
def electrumx_servers_session(
    regtest_node: RegtestNode, bed_certs: BedCerts, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[ElectrumXServer]]:
    """Three ElectrumX servers in front of `regtest_node` for the whole session.

    Prefer `electrumx_servers`, which also restarts any that a test stopped."""
    base = tmp_path_factory.mktemp("electrumx")
    servers = [ElectrumXServer(regtest_node.rpc_url, bed_certs, workdir=base / f"ex{i}",
                               name=f"electrumx{i}") for i in range(1, 4)]
    t0 = time.monotonic()
    try:
        start_all(servers)
        _wait_for_tip(regtest_node, servers)
        startup_times["electrumx"] = time.monotonic() - t0
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def electrumx_servers(
    regtest_node: RegtestNode, electrumx_servers_session: list[ElectrumXServer],
) -> list[ElectrumXServer]:
    """The 3 session servers, all running and at the node's tip when the test starts."""
    ensure_running(regtest_node, electrumx_servers_session)
    return electrumx_servers_session


@pytest.fixture
def start_electrumx(
    regtest_node: RegtestNode, bed_certs: BedCerts, tmp_path: Path,
) -> Iterator[Callable[..., ElectrumXServer]]:
    """A factory for extra servers, stopped after the test:
    `start_electrumx(pad_wait=None, **STOCK_LIMITS)` gives ElectrumX's stock behaviour."""
    started: list[ElectrumXServer] = []

    def start(pad_wait: float | None = DEFAULT_PAD_WAIT,
              **env: str | int | None) -> ElectrumXServer:
        n = len(started) + 1
        server = ElectrumXServer(regtest_node.rpc_url, bed_certs, env=env, pad_wait=pad_wait,
                                 workdir=tmp_path / f"extra-electrumx{n}",
                                 name=f"extra-electrumx{n}")
        started.append(server)
        start_all([server])
        _wait_for_tip(regtest_node, [server])
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def wait_for_tip(regtest_node: RegtestNode,
                 electrumx_servers: list[ElectrumXServer]) -> TipWaiter:
    """`wait_for_tip()` / `await wait_for_tip.wait_async()`: until the servers report the
    node's tip (see TipWaiter)."""
    return TipWaiter(regtest_node, electrumx_servers)

