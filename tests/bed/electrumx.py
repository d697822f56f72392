"""Launch and stop real ElectrumX (PyPI `e-x` 2.0.0) servers on loopback, one process each.

Each `ElectrumXServer` has its own LevelDB directory, log file and ports (TCP, SSL with a
self-signed certificate, and ElectrumX's local admin RPC). Its environment is ElectrumX's
configuration: `DEFAULT_ENV` below, overridable per server (a value of None removes the
variable, i.e. gives ElectrumX's own default - see `STOCK_LIMITS`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

__all__ = [
    "DEFAULT_ENV",
    "DEFAULT_PAD_WAIT",
    "STOCK_LIMITS",
    "BedCerts",
    "ElectrumXError",
    "ElectrumXServer",
    "electrum_request",
    "make_certs",
    "pick_free_ports",
    "start_all",
]

_LAUNCHER = Path(__file__).with_name("_launch_electrumx.py")

# Test-friendly configuration. Poll intervals are milliseconds in e-x 2.0.
DEFAULT_ENV: dict[str, str] = {
    "COIN": "Bitcoin",
    "NET": "regtest",
    "DB_ENGINE": "leveldb",
    "ALLOW_ROOT": "1",
    "PEER_DISCOVERY": "off",
    "DAEMON_POLL_INTERVAL_BLOCKS": "100",
    "DAEMON_POLL_INTERVAL_MEMPOOL": "100",
    # no throttling: tests hammer the servers on purpose
    "COST_SOFT_LIMIT": "0",
    "COST_HARD_LIMIT": "0",
    "REQUEST_SLEEP": "0",
    "INITIAL_CONCURRENT": "1000",
    "CACHE_MB": "64",
    "LOG_LEVEL": "info",
}
# Pass as overrides to get ElectrumX's stock throttling (cost limits 1000/10000, 2.5 s sleep).
STOCK_LIMITS: dict[str, str | None] = dict.fromkeys(
    ("COST_SOFT_LIMIT", "COST_HARD_LIMIT", "REQUEST_SLEEP", "INITIAL_CONCURRENT"), None)
# Seconds ElectrumX may hold a small message to pad it (stock: 1.0). None = stock.
DEFAULT_PAD_WAIT: float | None = 0.01
# Below Linux's ephemeral range (32768-60999), where outgoing connections take ports.
_PORT_RANGE = (20000, 31999)


class ElectrumXError(RuntimeError):
    """ElectrumX did not start, or did not answer as expected."""


@dataclass(frozen=True, slots=True)
class BedCerts:
    """A throw-away CA and a certificate for 127.0.0.1 / localhost signed by it."""

    cert_path: Path  # server certificate chain (PEM)
    key_path: Path  # its private key (PEM)
    ca_path: Path  # the CA certificate, for clients that verify

    def client_context(self, verify: bool = True) -> ssl.SSLContext:
        """An SSL context for clients: trusts the bed's CA, or verifies nothing."""
        if verify:
            return ssl.create_default_context(cafile=str(self.ca_path))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


def make_certs(directory: Path) -> BedCerts:
    """Write a CA and a server certificate for 127.0.0.1 into `directory`."""
    import trustme  # a test dependency; only needed here

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certs = BedCerts(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    cert.private_key_pem.write_to_path(str(certs.key_path))
    cert.cert_chain_pems[0].write_to_path(str(certs.cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certs.cert_path), append=True)
    ca.cert_pem.write_to_path(str(certs.ca_path))
    return certs


def pick_free_ports(n: int, exclude: Iterable[int] = ()) -> list[int]:
    """`n` distinct ports below the ephemeral range that are free right now."""
    taken = set(exclude)
    ports: list[int] = []
    for _ in range(1000):
        port = random.randint(*_PORT_RANGE)
        if port in taken:
            continue
        taken.add(port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise ElectrumXError(f"no {n} free ports in {_PORT_RANGE}")


def electrum_request(host: str, port: int, method: str, params: Sequence[Any] = (), *,
                     timeout: float = 5.0, protocol: str = "1.4",
                     ssl_context: ssl.SSLContext | None = None) -> Any:
    """One Electrum protocol request on a fresh connection (negotiating `protocol`).

    Synchronous and dependency-free, for fixtures and waits. A fresh connection per call
    stays within ElectrumX's unpadded warm-up budget, so answers are immediate."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = raw if ssl_context is None else ssl_context.wrap_socket(raw)
        with sock:
            reqs = [{"jsonrpc": "2.0", "id": 0, "method": "server.version",
                     "params": ["chainwire-bed", protocol]},
                    {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}]
            sock.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in reqs))
            buf = b""
            deadline = time.monotonic() + timeout
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if msg.get("id") == 1:
                        if msg.get("error"):
                            raise ElectrumXError(f"{method}: {msg['error']}")
                        return msg.get("result")
                    if msg.get("id") == 0 and msg.get("error"):
                        raise ElectrumXError(f"server.version: {msg['error']}")
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    raise ElectrumXError(f"connection closed waiting for {method}")
                buf += chunk


class ElectrumXServer:
    """One ElectrumX process in front of a node's JSON-RPC (`daemon_url`)."""

    def __init__(
        self,
        daemon_url: str,
        certs: BedCerts,
        *,
        env: Mapping[str, str | int | None] | None = None,
        pad_wait: float | None = DEFAULT_PAD_WAIT,
        ports: tuple[int, int, int] | None = None,
        workdir: Path | None = None,
        name: str = "electrumx",
    ) -> None:
        """`env` overrides `DEFAULT_ENV` (None removes a variable); `pad_wait` replaces
        ElectrumX's 1 s hold of small messages (None = stock); `ports` is (tcp, ssl, rpc),
        picked at random when not given."""
        self.daemon_url = daemon_url
        self.certs = certs
        self.env_overrides = dict(env or {})
        self.pad_wait = pad_wait
        self.name = name
        self._fixed_ports = ports is not None
        self.tcp_port, self.ssl_port, self.rpc_port = ports or pick_free_ports(3)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{name}-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_dir = self.workdir / "db"
        self.log_path = self.workdir / "electrumx.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._started_once = False

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<ElectrumXServer {self.name} {self.tcp_url} {state}>"

    # --- addresses ---

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.tcp_port}"

    @property
    def ssl_url(self) -> str:
        return f"ssl://127.0.0.1:{self.ssl_port}"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def environment(self) -> dict[str, str]:
        """The complete environment the process gets (a clean one, not the caller's)."""
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
        env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        env.update(DEFAULT_ENV)
        env.update(
            DB_DIRECTORY=str(self.db_dir),
            DAEMON_URL=self.daemon_url,
            SERVICES=(f"tcp://127.0.0.1:{self.tcp_port},ssl://127.0.0.1:{self.ssl_port},"
                      f"rpc://127.0.0.1:{self.rpc_port}"),
            SSL_CERTFILE=str(self.certs.cert_path),
            SSL_KEYFILE=str(self.certs.key_path),
        )
        for key, value in self.env_overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    # --- lifecycle ---

    def launch(self) -> None:
        """Spawn the process; `wait_ready()` then waits until it serves clients."""
        if self.is_running:
            raise ElectrumXError(f"{self.name} is already running")
        self._reap()
        self.db_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            log.write(f"=== bed: starting {self.name} {self.tcp_url} {self.ssl_url}\n".encode())
            pad = "stock" if self.pad_wait is None else repr(self.pad_wait)
            self._proc = subprocess.Popen(
                # -P: not tests/bed on sys.path, where this module would shadow electrumx
                [sys.executable, "-P", str(_LAUNCHER), pad], env=self.environment(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,  # Ctrl-C in a terminal is ours
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the TCP and SSL ports are served (ElectrumX opens them only once it
        has caught up with the node and synced the mempool); fail loudly otherwise."""
        deadline = time.monotonic() + timeout
        needed = {f"TCP server listening on 127.0.0.1:{self.tcp_port}",
                  f"SSL server listening on 127.0.0.1:{self.ssl_port}"}
        while True:
            log = self._new_log()
            if "failed to listen" in log:
                self.kill()
                raise ElectrumXError(f"{self.name} could not bind its ports\n{self.log_tail()}")
            if all(line in log for line in needed):
                break
            if not self.is_running:
                raise ElectrumXError(f"{self.name} exited during start-up\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ElectrumXError(f"{self.name} not ready after {timeout}s\n{self.log_tail()}")
            time.sleep(0.02)
        # ElectrumX says it listens; check that the port really is this server's.
        try:
            with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=5):
                pass
        except OSError as e:
            self.kill()
            raise ElectrumXError(f"{self.name} does not accept connections: {e}\n"
                                 f"{self.log_tail()}") from e
        self._started_once = True

    def start(self, timeout: float = 30.0) -> ElectrumXServer:
        """Launch and wait until ready. Ports picked by us are re-picked (up to 3 times)
        if another process took one before ElectrumX bound it."""
        for attempt in range(3):
            self.launch()
            try:
                self.wait_ready(timeout)
                return self
            except ElectrumXError as e:
                if ("could not bind" not in str(e) or self._fixed_ports or self._started_once
                        or attempt == 2):
                    raise
                self.tcp_port, self.ssl_port, self.rpc_port = pick_free_ports(3)
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (ElectrumX flushes its DB); SIGKILL after `timeout`."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would; the DB may need ElectrumX's recovery at restart."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._proc = None

    def restart(self, timeout: float = 30.0) -> ElectrumXServer:
        """Stop if running, start again on the same ports with the same DB."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop and delete the work directory if the server created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ElectrumXServer:
        return self if self.is_running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc.wait()
            self._proc = None

    # --- logs ---

    def _new_log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    # --- talking to it ---

    def request(self, method: str, *params: Any, timeout: float = 5.0,
                protocol: str = "1.4") -> Any:
        """One Electrum protocol request over TCP on a fresh connection (synchronous)."""
        return electrum_request("127.0.0.1", self.tcp_port, method, params, timeout=timeout,
                                protocol=protocol)

    def tip(self) -> tuple[int, str]:
        """(height, header hex) that the server reports to clients right now."""
        result = self.request("blockchain.headers.subscribe")
        return int(result["height"]), str(result["hex"])

    def wait_for_height(self, height: int, timeout: float = 10.0,
                        header: bytes | None = None) -> tuple[int, str]:
        """Wait until the server reports at least `height` to clients (and, if `header` is
        given, exactly that tip header). Returns the reported (height, header hex)."""
        deadline = time.monotonic() + timeout
        last: tuple[int, str] | None = None
        while True:
            if not self.is_running:
                raise ElectrumXError(f"{self.name} is not running\n{self.log_tail()}")
            with contextlib.suppress(OSError, ElectrumXError, ValueError):
                last = self.tip()
                if last[0] >= height and (header is None or last[1] == header.hex()):
                    return last
            if time.monotonic() > deadline:
                raise ElectrumXError(
                    f"{self.name} at {last} after {timeout}s, waiting for height {height}"
                    f"{'' if header is None else ' header ' + header.hex()}\n{self.log_tail()}")
            time.sleep(0.02)

    async def wait_for_height_async(
        self, height: int, timeout: float = 10.0,  # noqa: ASYNC109 - mirrors the sync one
        header: bytes | None = None,
    ) -> tuple[int, str]:
        """`wait_for_height` in a worker thread, for async tests."""
        return await anyio.to_thread.run_sync(
            lambda: self.wait_for_height(height, timeout, header))


def start_all(servers: Sequence[ElectrumXServer], timeout: float = 30.0) -> None:
    """Start several servers in parallel (launch all, then wait for each)."""
    for server in servers:
        if not server.is_running:
            server.launch()
    try:
        for server in servers:
            try:
                server.wait_ready(timeout)
            except ElectrumXError as e:
                if "could not bind" not in str(e):
                    raise
                server.start(timeout)  # re-picks its ports
    except BaseException:
        for server in servers:
            server.kill()
        raise
