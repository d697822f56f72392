"""``chainwire serve`` as a user runs it: a real process on a real port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stream import __version__
from stream.settings import describe_variables
from tests.server_process import REPO, ChainwireProcess


def chainwire(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO
              ) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("CHAINWIRE_")}
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args], env={**base, **(env or {})},
        cwd=cwd, capture_output=True, text=True, timeout=30,
    )


def test_help_documents_every_variable() -> None:
    result = chainwire("serve", "--help")
    assert result.returncode == 0
    for name, default, _ in describe_variables():
        assert name in result.stdout
        assert f"[default: {default}]" in result.stdout


def test_bad_variable_exits_nonzero_with_one_clear_line(tmp_path: Path) -> None:
    result = chainwire("serve", env={"CHAINWIRE_WINDOW_MS": "abc"}, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        'chainwire: CHAINWIRE_WINDOW_MS must be a positive integer (at most 60000), got "abc"'
    ]


class ConnectionCounter:
    """A loopback listener standing in for an Electrum server: it only counts connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def electrum_listener() -> Iterator[ConnectionCounter]:
    counter = ConnectionCounter()
    yield counter
    counter.close()


def test_serve_answers_at_once_while_electrum_is_unusable(
    tmp_path: Path, electrum_listener: ConnectionCounter
) -> None:
    """Start-up never waits on Electrum: the producers follow the chain in the
    background, and the only configured "server" hangs up on every connection."""
    env = {
        "CHAINWIRE_NETWORK": "regtest",
        "CHAINWIRE_SERVERS": f"tcp://127.0.0.1:{electrum_listener.port}",
    }
    with ChainwireProcess(env, cwd=tmp_path) as server:
        print(f"ready after {server.ready_after:.3f} s")
        page = httpx.get(f"{server.url}/", timeout=5)
        assert page.status_code == 200 and "Chainwire" in page.text
        health = httpx.get(f"{server.url}/healthz", timeout=10)
        assert health.status_code == 503
        body = health.json()
        assert body["version"] == __version__ and body["network"] == "regtest"
        assert body["problems"] == ["no Electrum server reachable at the tip"]
        assert electrum_listener.accepted >= 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_shuts_down_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    server = ChainwireProcess({}, cwd=tmp_path).start()
    try:
        assert server.stop(sig) == 0
    finally:
        server.kill()
    log = server.log()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
