"""The whole bed: one regtest node and several ElectrumX servers in front of it.

Used by the pytest fixtures (tests/conftest.py) and by `python -m tests.bed`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from tests.bed.electrumx import (
    DEFAULT_PAD_WAIT,
    BedCerts,
    ElectrumXError,
    ElectrumXServer,
    make_certs,
    start_all,
)
from tests.bed.node import RegtestNode

__all__ = [
    "Bed",
    "TipWaiter",
    "ensure_running",
    "startup_times",
    "wait_for_tip",
    "wait_for_tip_async",
]

logger = logging.getLogger(__name__)

# Seconds each part of the session's bed took to start ("node", "electrumx", "total").
startup_times: dict[str, float] = {}


def wait_for_tip(node: RegtestNode, servers: Sequence[ElectrumXServer],
                 timeout: float = 10.0) -> None:
    """Wait until every server reports the node's current tip (height and header) to
    clients. Raises ElectrumXError with the laggard's log tail on timeout."""
    height = node.height
    header = node.header(height)
    deadline = time.monotonic() + timeout
    for server in servers:
        server.wait_for_height(height, max(0.1, deadline - time.monotonic()), header=header)


async def wait_for_tip_async(node: RegtestNode, servers: Sequence[ElectrumXServer],
                             timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """`wait_for_tip` for async tests (runs in a worker thread)."""
    await anyio.to_thread.run_sync(lambda: wait_for_tip(node, servers, timeout))


def ensure_running(node: RegtestNode, servers: Sequence[ElectrumXServer],
                   timeout: float = 30.0) -> None:
    """Restart any server a test stopped or killed, then wait for the node's tip."""
    stopped = [s for s in servers if not s.is_running]
    if stopped:
        logger.info("restarting %s", ", ".join(s.name for s in stopped))
        for server in stopped:
            server.stop()  # reaps a killed process
        start_all(stopped, timeout)
    wait_for_tip(node, servers, timeout)


class Bed:
    """A node plus `n_servers` ElectrumX servers, started together.

    `base_port` fixes the ports: server i (0-based) gets TCP base+10*i, SSL base+10*i+1 and
    ElectrumX's admin RPC base+10*i+2; otherwise ports are picked at random."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        n_servers: int = 3,
        rpc_port: int = 0,
        base_port: int | None = None,
        pad_wait: float | None = DEFAULT_PAD_WAIT,
        env: Mapping[str, str | int | None] | None = None,
        initial_blocks: int = 101,
    ) -> None:
        if n_servers < 0:
            raise ValueError(f"n_servers must be >= 0, got {n_servers}")
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="chainwire-bed-")) if workdir is None \
            else workdir
        self.node = RegtestNode(port=rpc_port, initial_blocks=initial_blocks)
        self.certs: BedCerts | None = None
        self.servers: list[ElectrumXServer] = []
        self._n_servers = n_servers
        self._base_port = base_port
        self._pad_wait = pad_wait
        self._env = dict(env or {})
        self.startup_seconds: dict[str, float] = {}

    def start(self, timeout: float = 30.0) -> Bed:
        t0 = time.monotonic()
        self.certs = make_certs(self.workdir / "certs")
        self.node.start()
        t1 = time.monotonic()
        for i in range(self._n_servers):
            ports = None
            if self._base_port is not None:
                p = self._base_port + 10 * i
                ports = (p, p + 1, p + 2)
            self.servers.append(ElectrumXServer(
                self.node.rpc_url, self.certs, env=self._env, pad_wait=self._pad_wait,
                ports=ports, workdir=self.workdir / f"electrumx{i + 1}",
                name=f"electrumx{i + 1}"))
        for server in self.servers:  # a fresh node: an old DB would hold another chain
            shutil.rmtree(server.db_dir, ignore_errors=True)
        try:
            start_all(self.servers, timeout)
            wait_for_tip(self.node, self.servers, timeout)
        except BaseException:
            self.close()
            raise
        t2 = time.monotonic()
        self.startup_seconds = {"node": t1 - t0, "electrumx": t2 - t1, "total": t2 - t0}
        return self

    def close(self) -> None:
        """Stop the servers, then the node; delete the work dir if the bed made it."""
        errors: list[BaseException] = []
        for server in self.servers:
            try:
                server.stop()
            except Exception as e:  # stop the others anyway
                errors.append(e)
        self.node.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise ElectrumXError(f"stopping servers failed: {errors!r}")

    def __enter__(self) -> Bed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_for_tip(self, timeout: float = 10.0) -> None:
        wait_for_tip(self.node, self.servers, timeout)

    def chainwire_servers(self, ssl: bool = False) -> str:
        """The value for CHAINWIRE_SERVERS: every server's TCP (or SSL) URL."""
        return ",".join(s.ssl_url if ssl else s.tcp_url for s in self.servers)


class TipWaiter:
    """`wait_for_tip()` blocks until the servers (default: the 3 session servers) report
    the node's tip; `await wait_for_tip.wait_async()` does the same from async tests."""

    def __init__(self, node: RegtestNode, servers: Sequence[ElectrumXServer]) -> None:
        self._node = node
        self._servers = servers

    def __call__(self, servers: Sequence[ElectrumXServer] | None = None,
                 timeout: float = 10.0) -> None:
        wait_for_tip(self._node, self._servers if servers is None else servers, timeout)

    async def wait_async(self, servers: Sequence[ElectrumXServer] | None = None,
                         timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await wait_for_tip_async(self._node, self._servers if servers is None else servers,
                                 timeout)
