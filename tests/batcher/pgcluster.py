"""A throwaway PostgreSQL cluster for tests that stop and start the server.

Never the machine's shared server: ``initdb`` makes a cluster in a temporary directory, and
it listens on a free loopback port with its socket in that directory (trust auth, no TLS).
PostgreSQL refuses to run as root, so as root every command runs as the ``postgres`` OS
user (``runuser -u postgres --``), which owns the directory; otherwise as the current user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgCluster", "find_pg_bindir", "throwaway_cluster", "why_no_cluster"]

_SERVICE_USER = "postgres"


def find_pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl."""
    found = [
        p.parent
        for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if (p.parent / "pg_ctl").exists()
    ]
    found.sort(key=lambda p: _version(p.parent.name))
    return found[-1] if found else None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", _SERVICE_USER, "--"]


def why_no_cluster() -> str | None:
    """Why a throwaway cluster cannot be made here (None when it can)."""
    if find_pg_bindir() is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: cannot start PostgreSQL as another user"
        try:
            pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            return f"running as root and there is no {_SERVICE_USER!r} user to run PostgreSQL"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PgCluster:
    bindir: Path
    root: Path
    port: int

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        command = [
            *_run_as(),
            str(self.bindir / "pg_ctl"),
            "-D", str(self.datadir),
            "-l", str(self.root / "server.log"),
            "-w", "-t", "60",
            *args,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}\n--- server.log ---\n{log}"
            )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c max_connections=30"
        )
        self._pg_ctl("-o", options, "start")

    def stop(self) -> None:
        """A fast shutdown: open sessions are terminated, in-flight transactions roll back."""
        self._pg_ctl("-m", "fast", "stop")


@contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """A started cluster, stopped and deleted afterwards."""
    bindir = find_pg_bindir()
    if bindir is None:
        raise RuntimeError(why_no_cluster() or "no PostgreSQL binaries")
    # Under /tmp, not pytest's tmp_path: as root that sits in 0700 directories the
    # postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="chainwire-pg-"))
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam(_SERVICE_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
        subprocess.run(
            [
                *_run_as(),
                str(bindir / "initdb"),
                "-D", str(root / "data"),
                "-U", "postgres",
                "-A", "trust",
                "-E", "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        cluster = PgCluster(bindir, root, _free_port())
        for attempt in range(3):
            try:
                cluster.start()
                break
            except RuntimeError:
                # The free port may have been taken in between: try another.
                if attempt == 2:
                    raise
                cluster.port = _free_port()
        try:
            yield cluster
        finally:
            if (cluster.datadir / "postmaster.pid").exists():
                cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
