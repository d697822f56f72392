"""Run the real ``chainwire serve`` as a subprocess on a free loopback port, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

__all__ = ["ChainwireProcess", "free_port"]

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port that is free right now (below Linux's ephemeral range)."""
    for port in range(24000 + os.getpid() % 4000, 32000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32000")


class ChainwireProcess:
    """``chainwire serve`` with a given environment; ``start()`` waits for ``/healthz``."""

    def __init__(self, env: Mapping[str, str], cwd: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.cwd = cwd
        self.log_path = cwd / f"chainwire-{self.port}.log"
        # Only what the test gives: no CHAINWIRE_* leaking in from the developer's shell.
        base = {k: v for k, v in os.environ.items() if not k.startswith("CHAINWIRE_")}
        base.pop("PORT", None)
        self.env = {**base, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_after: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ChainwireProcess:
        """Start and wait until it serves (``/`` answers only after the lifespan ran; unlike
        ``/healthz`` it never asks Electrum, so readiness does not depend on the pool)."""
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "serve", "--port", str(self.port)],
                cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chainwire exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/", timeout=1.0).status_code == 200:
                    self.ready_after = time.monotonic() - started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"chainwire did not serve in {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ChainwireProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
