"""Processes for the benchmarks: spawn one with a ready line, wait for a port, and read
CPU time from ``/proc`` (user + system ticks) for a process and its children."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- CPU accounting -------------------------------------------------------------------------


def proc_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (all its threads), in clock ticks; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


@dataclass
class CpuSnapshot:
    wall: float
    groups: dict[str, int]
    machine: tuple[int, int]


def snapshot(groups: dict[str, list[int]]) -> CpuSnapshot:
    return CpuSnapshot(time.monotonic(),
                       {name: sum(proc_ticks(p) for p in pids) for name, pids in groups.items()},
                       machine_ticks())


def cpu_percent(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, float]:
    wall = b.wall - a.wall
    out = {name: 100 * (b.groups[name] - a.groups[name]) / TICK / wall for name in a.groups}
    busy = b.machine[0] - a.machine[0]
    total = b.machine[1] - a.machine[1]
    out["machine"] = 100 * (os.cpu_count() or 1) * busy / total if total else 0.0
    return out


# -- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self, within: float) -> str:
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), within)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no answer within {within:.0f} s; "
                               f"its log: {self.tail()}") from None
        if not raw:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}): {self.tail()}")
        return raw.decode().strip()

    async def expect(self, word: str, within: float) -> str:
        line = await self.line(within)
        if not line.startswith(word):
            raise RuntimeError(f"{self.name}: expected {word!r}, got {line[:300]!r}; "
                               f"its log: {self.tail()}")
        return line

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")

    def tail(self) -> str:
        try:
            return self.log.read_text()[-1500:].strip() or "(empty)"
        except OSError:
            return "(no log)"

    async def stop(self, command: str | None = "quit", within: float = 10) -> None:
        if self.process.returncode is None:
            if command is not None:
                with contextlib.suppress(ConnectionError):
                    self.send(command)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.terminate()
                try:
                    await asyncio.wait_for(self.process.wait(), 5)
                except TimeoutError:
                    self.process.kill()
                    await self.process.wait()


@contextlib.asynccontextmanager
async def spawn(name: str, argv: list[str], workdir: Path, *,
                stop: str | None = "quit", env: dict[str, str] | None = None,
                ) -> AsyncIterator[Proc]:
    """``argv`` running in the repository, with ``env`` on top of this environment."""
    log = workdir / f"{name}.log"
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=err, limit=1 << 26, env={**os.environ, **env} if env else None)
    proc = Proc(name, process, log)
    try:
        yield proc
    finally:
        await proc.stop(stop)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


async def wait_port(port: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {within:.0f} s") \
                    from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


# -- one measurement ------------------------------------------------------------------------
