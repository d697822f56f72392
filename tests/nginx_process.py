"""Real nginx (Debian's nginx-light) in front of a Chainwire port, for tests.

It runs the repository's ``deploy/nginx.conf`` -- the file the README includes -- with only
its listen and upstream ports changed, inside a minimal main config whose pid, logs and
temp paths live in a test's directory. Never a system service: ``nginx -p DIR -c CONF
-g 'daemon off;'``, stopped by its own pid.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from tests.bed.electrumx import ElectrumXServer
from tests.server_process import REPO, free_port

__all__ = ["NGINX", "NGINX_CONF", "RETRY_LATER", "NginxProcess", "block_batches", "regtest_env",
           "site_config", "wait_for_block"]

NGINX = Path("/usr/sbin/nginx")
NGINX_CONF = REPO / "deploy" / "nginx.conf"
# The lines that turn nginx's 502 into a closed connection, for tests that go without.
RETRY_LATER = ("proxy_intercept_errors on;", "error_page 502 503 504 = @retry_later;")
LISTEN = "listen 8080;"
UPSTREAM = "server 127.0.0.1:8000;"


def site_config(upstream_port: int, listen_port: int, drop: Iterable[str] = ()) -> str:
    """``deploy/nginx.conf`` for these ports; each line of ``drop`` must be in it and is
    left out (to show what the config would do without it)."""
    text = NGINX_CONF.read_text()
    for needle, value in ((LISTEN, f"listen 127.0.0.1:{listen_port};"),
                          (UPSTREAM, f"server 127.0.0.1:{upstream_port};")):
        assert text.count(needle) == 1, f"{NGINX_CONF} should have one {needle!r}"
        text = text.replace(needle, value)
    for line in drop:
        pattern = re.compile(rf"^[ \t]*{re.escape(line)}[ \t]*\n", re.MULTILINE)
        text, count = pattern.subn("", text)
        assert count == 1, f"{line!r} is not a line of {NGINX_CONF}"
    return text


def _free_port_besides(taken: int) -> int:
    """``free_port()`` finds the first free one: the upstream's, while Chainwire is down."""
    port = free_port()
    while port == taken or not _bindable(port):
        port += 1
    return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class NginxProcess:
    """nginx serving ``deploy/nginx.conf`` on a free port, proxying to ``upstream_port``."""

    def __init__(self, upstream_port: int, workdir: Path, drop: Iterable[str] = ()) -> None:
        self.port = _free_port_besides(upstream_port)
        self.prefix = workdir / f"nginx-{self.port}"
        self.access_log = self.prefix / "access.log"
        self.error_log = self.prefix / "error.log"
        (self.prefix / "temp").mkdir(parents=True)
        (self.prefix / "site.conf").write_text(site_config(upstream_port, self.port, drop))
        temp = self.prefix / "temp"
        (self.prefix / "nginx.conf").write_text(f"""
pid {self.prefix}/nginx.pid;
error_log {self.error_log} info;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    # As many servers' main configs do: gzip would hold SSE batches in its buffer if
    # nginx buffered the stream, so the tests see the config's unbuffered proxying work.
    gzip on;
    gzip_types text/event-stream application/json;
    access_log {self.access_log};
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {self.prefix}/site.conf;
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NginxProcess:
        args = [str(NGINX), "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                "-e", str(self.error_log)]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([*args, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}:\n{self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nginx did not listen in {timeout} s:\n{self.errors()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # nginx's fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self) -> list[tuple[str, int]]:
        """``(request line, status)`` from the access log, oldest first."""
        if not self.access_log.exists():
            return []
        found = re.findall(r'"([^"]*)" (\d{3}) ', self.access_log.read_text(errors="replace"))
        return [(line, int(status)) for line, status in found]

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def regtest_env(servers: list[ElectrumXServer], database: Path) -> dict[str, str]:
    """``chainwire serve`` following the bed, over an SQLite file that outlives a restart."""
    return {"CHAINWIRE_NETWORK": "regtest",
            "CHAINWIRE_SERVERS": ",".join(s.tcp_url for s in servers),
            "CHAINWIRE_DATABASE_URL": f"sqlite:///{database}"}


def block_batches(url: str, after: int = 0) -> list[dict[str, Any]]:
    """The stored ``block`` batches after seq ``after``, exactly as streamed."""
    answer = httpx.get(f"{url}/api/v1/batches", params={"after": after, "limit": 1000},
                       timeout=5)
    assert answer.status_code == 200, answer.text
    return [b for b in answer.json()["batches"] if b["type"] == "block"]


def wait_for_block(url: str, height: int, seconds: float = 20) -> None:
    """Until the ``block`` event at ``height`` is stored (and so published)."""
    deadline = time.monotonic() + seconds
    while True:
        heights = [e["data"]["height"] for b in block_batches(url) for e in b["events"]]
        if height in heights:
            return
        assert time.monotonic() < deadline, f"no block {height} stored; got {heights}"
        time.sleep(0.05)
