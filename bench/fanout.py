"""Fan-out: 1000 concurrent clients (half SSE, half WebSocket) receiving 10-event batches,
from Chainwire and, in the same run, from (a) the limit and (b) nginx + Nchan, a peer.

For each system: the server runs in its own process; client processes open the
connections (raw asyncio clients, ``bench/fanout_client.py``); once every client is
connected and subscribed, ``--rate`` batches of 10 events a second are published for
``--warmup`` + ``--seconds``. Figures are taken over the last ``--seconds``:

- frames/s: batch frames received by all clients of a transport, per second;
- p50 / p99: receipt time minus the publish time stamped inside the frame's first event
  (``time.time()`` on both sides, same machine), over every frame of the window;
- server CPU: the server processes' user+system time (``/proc/PID/stat``) over the window,
  in % of one core. Client, publisher and whole-machine CPU are printed too, so a run where
  the clients or the neighbours were the bottleneck shows as such.

Systems:

- **chainwire**: the real app (``create_app``/``run_services``) under uvicorn as
  ``chainwire serve`` runs it, store SQLite in a temporary file (``--pg``: a fresh PostgreSQL
  database, created and dropped), events entering through the batcher
  (``runner.submit``): what is measured is batcher -> store -> hub -> SSE/WS. The per-IP
  connection cap is lifted for the bench (all clients come from 127.0.0.1).
- **limit**: a bare ``websockets`` server calling ``websockets.broadcast`` for the WS half
  and a raw asyncio SSE writer (one ``transport.write`` of a pre-encoded chunk per client)
  for the SSE half, one process and one event loop like Chainwire.
- **nchan**: nginx with the Nchan module (``bench/nchan.conf``, ``--nchan-workers``
  workers, 1 by default to match one Python process), fed by HTTP POSTs to its publisher
  location from a separate publisher process.

Every system sends the same frames: Chainwire's batch JSON of 10 ``address`` events (about
3 KB), ``{"op":"batch",...}`` on WS, as SSE ``data:``; no compression unless
``--ws-deflate`` (then the WS clients offer permessage-deflate as browsers and the
``websockets`` client do, and Chainwire accepts it as with ``CHAINWIRE_WS_COMPRESSION=true``;
the limit server never accepts it, Nchan as configured neither).

Needs: nginx and Nchan for (b) (Debian: ``apt-get install nginx-light libnginx-mod-nchan``;
without them (b) is skipped and says why). The machine has 2 cores shared with others:
compare the ratios, not the absolute figures. Prints a table, then exactly one JSON line.

    .venv/bin/python -m bench.fanout [--clients 1000] [--rate 100] [--seconds 10]
        [--procs 2] [--rounds 1] [--skip-nchan] [--skip-limit] [--pg] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fanout_client import BUCKET
from bench.fanout_server import raise_fd_limit

ROOT = Path(__file__).resolve().parent.parent
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
TRANSPORTS = ("ws", "sse")
GOALS = {"ws": 50_000, "sse": 25_000}  # frames/s, issue 6
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
                stop: str | None = "quit") -> AsyncIterator[Proc]:
    log = workdir / f"{name}.log"
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=err, limit=1 << 26)
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


@dataclass
class Target:
    """Where a system's clients connect, and which processes are its server."""

    sse_url: str
    ws_url: str
    server_pids: list[int]
    publisher: Proc
    publisher_is_server: bool
    ws_subscribe: bool = False


@dataclass
class Measurement:
    system: str
    transports: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    published: int = 0


def quantile(hist: Counter[int], q: float) -> float:
    """The ``q`` quantile of a 0.1 ms histogram, in ms."""
    total = sum(hist.values())
    if not total:
        return float("nan")
    rank = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return (bucket + 0.5) * 1000 / BUCKET
    return float("nan")


async def measure(system: str, target: Target, args: argparse.Namespace,
                  workdir: Path) -> Measurement:
    per_proc = [(args.clients // 2 + i) // args.procs for i in range(args.procs)]
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Proc] = []
        for i, n in enumerate(per_proc):
            argv = python_module("bench.fanout_client", "--sse-url", target.sse_url,
                                 "--sse", str(n), "--ws-url", target.ws_url, "--ws", str(n))
            if target.ws_subscribe:
                argv.append("--ws-subscribe")
            if args.ws_deflate:
                argv.append("--ws-deflate")
            clients.append(await stack.enter_async_context(
                spawn(f"{system}-client{i}", argv, workdir, stop=None)))
        for client in clients:
            await client.expect("ready", 120)
        groups = {"server": target.server_pids, "clients": [c.pid for c in clients]}
        if not target.publisher_is_server:
            groups["publisher"] = [target.publisher.pid]
        await asyncio.sleep(0.5)
        start = time.time() + 0.2
        t0, t1 = start + args.warmup, start + args.warmup + args.seconds
        for client in clients:
            client.send(f"window {t0} {t1}")
        await asyncio.sleep(start - time.time())
        target.publisher.send(f"go {args.rate} {args.warmup + args.seconds + 0.5}")
        await asyncio.sleep(t0 - time.time())
        before = snapshot(groups)
        await asyncio.sleep(t1 - time.time())
        after = snapshot(groups)
        published = int((await target.publisher.expect("published", 60)).split()[1])
        await asyncio.sleep(args.drain)
        results = []
        for client in clients:
            client.send("stop")
        for client in clients:
            results.append(json.loads(await client.line(60)))
    result = Measurement(system, cpu=cpu_percent(before, after), published=published)
    for transport in TRANSPORTS:
        hist: Counter[int] = Counter()
        merged: Counter[str] = Counter()
        for r in results:
            t = r[transport]
            hist.update({int(k): v for k, v in t["hist"].items()})
            merged.update({k: t[k] for k in ("connected", "frames", "window_frames", "closed",
                                             "bytes")})
        clients_n = sum(per_proc)
        result.transports[transport] = {
            "clients": clients_n,
            "connected": merged["connected"],
            "closed": merged["closed"],
            "frames": merged["frames"],
            "expected": published * clients_n,
            "frames_per_s": merged["window_frames"] / args.seconds,
            "offered_per_s": args.rate * clients_n,
            "p50_ms": quantile(hist, 0.50),
            "p99_ms": quantile(hist, 0.99),
            "max_ms": (max(hist) + 1) * 1000 / BUCKET if hist else float("nan"),
        }
    return result


# -- the systems ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def chainwire(args: argparse.Namespace, workdir: Path) -> AsyncIterator[Target]:
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        argv = python_module("bench.fanout_server", "chainwire", "--port", str(port))
        if args.ws_deflate:
            argv.append("--ws-compression")
        if args.pg:
            from bench.persist import fresh_database

            url = await stack.enter_async_context(fresh_database(args.admin_url))
            argv += ["--database-url", url]
        server = await stack.enter_async_context(spawn("chainwire-server", argv, workdir))
        await server.expect("ready", 60)
        yield Target(f"http://127.0.0.1:{port}/events", f"ws://127.0.0.1:{port}/ws",
                     [server.pid], server, True, ws_subscribe=True)


@contextlib.asynccontextmanager
async def limit(args: argparse.Namespace, workdir: Path) -> AsyncIterator[Target]:
    ws_port, sse_port = free_port(), free_port()
    argv = python_module("bench.fanout_server", "limit", "--ws-port", str(ws_port),
                         "--sse-port", str(sse_port))
    async with spawn("limit-server", argv, workdir) as server:
        await server.expect("ready", 60)
        yield Target(f"http://127.0.0.1:{sse_port}/events", f"ws://127.0.0.1:{ws_port}/",
                     [server.pid], server, True)


def nchan_missing() -> str | None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed (apt-get install nginx-light libnginx-mod-nchan)"
    if not Path(NCHAN_MODULE).exists():
        return f"the Nchan module is not installed ({NCHAN_MODULE}: apt-get install " \
               "libnginx-mod-nchan)"
    return None


@contextlib.asynccontextmanager
async def nchan(args: argparse.Namespace, workdir: Path) -> AsyncIterator[Target]:
    port = free_port()
    prefix = workdir / f"nchan-{uuid.uuid4().hex[:6]}"
    prefix.mkdir()
    conf = (Path(__file__).with_name("nchan.conf").read_text()
            .replace("@PORT@", str(port)).replace("@WORKERS@", str(args.nchan_workers))
            .replace("@PREFIX@", str(prefix)).replace("@MODULE@", NCHAN_MODULE))
    (prefix / "nchan.conf").write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [nginx, "-p", str(prefix), "-c", str(prefix / "nchan.conf"), "-e", "stderr",
            "-g", "daemon off;"]
    # nginx stops on SIGTERM (fast) / SIGQUIT (graceful); it does not read stdin.
    async with spawn("nchan-nginx", argv, workdir, stop=None) as server:
        try:
            await wait_port(port)
            await asyncio.sleep(0.3)
            workers = children(server.pid)
            if not workers:
                raise RuntimeError(f"nginx started no worker: {server.tail()}")
            publisher_argv = python_module("bench.fanout_server", "nchan-publisher",
                                           "--port", str(port))
            async with spawn("nchan-publisher", publisher_argv, workdir) as publisher:
                await publisher.expect("ready", 30)
                yield Target(f"http://127.0.0.1:{port}/sub", f"ws://127.0.0.1:{port}/sub",
                             [server.pid, *workers], publisher, False)
        finally:
            if server.process.returncode is None:
                server.process.terminate()


SYSTEMS = {"chainwire": chainwire, "limit": limit, "nchan": nchan}


# -- report ---------------------------------------------------------------------------------


def fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)  # NaN -> "-"


def best_round(rounds: list[Measurement]) -> Measurement:
    """The least disturbed round: the most frames delivered in all."""
    return max(rounds, key=lambda m: sum(t["frames_per_s"] for t in m.transports.values()))


def report(args: argparse.Namespace, runs: dict[str, list[Measurement]],
           skipped: dict[str, str]) -> dict[str, Any]:
    window = args.window_ms
    print(f"\nfan-out: {args.clients} clients ({args.clients // 2} SSE + {args.clients // 2} "
          f"WS), {args.rate:g} batches/s of 10 events, {args.seconds:g} s measured after "
          f"{args.warmup:g} s warm-up, {args.procs} client processes, rounds: {args.rounds}")
    header = (f"{'system':<10}{'transport':<10}{'clients':>8}{'frames':>10}{'frames/s':>10}"
              f"{'offered/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cut':>5}"
              f"{'srv CPU%':>9}{'cli CPU%':>9}{'machine%':>9}")
    print(header)
    print("-" * len(header))
    best: dict[str, Measurement] = {}
    for system, rounds in runs.items():
        best[system] = best_round(rounds)
        for i, m in enumerate(rounds):
            mark = "*" if len(rounds) > 1 and m is best[system] else ""
            for transport in TRANSPORTS:
                t = m.transports[transport]
                cpu = (f"{m.cpu['server']:>9.0f}{m.cpu['clients']:>9.0f}{m.cpu['machine']:>9.0f}"
                       if transport == "ws" else "")
                print(f"{(system + mark) if transport == 'ws' else '':<10}{transport:<10}"
                      f"{t['clients']:>8}{t['frames']:>10}{t['frames_per_s']:>10.0f}"
                      f"{t['offered_per_s']:>10.0f}{fmt(t['p50_ms'], '.1f'):>9}"
                      f"{fmt(t['p99_ms'], '.1f'):>9}{fmt(t['max_ms'], '.0f'):>9}"
                      f"{t['closed']:>5}{cpu}")
            if "publisher" in m.cpu and i == 0:
                print(f"{'':<10}(the {system} publisher process used {m.cpu['publisher']:.0f} % "
                      "CPU, not counted as server CPU)")
    for system, reason in skipped.items():
        print(f"{system:<10}skipped: {reason}")

    figures: dict[str, Any] = {"bench": "fanout", "clients": args.clients, "rate": args.rate,
                               "events_per_batch": 10, "seconds": args.seconds,
                               "rounds": args.rounds, "store": "postgresql" if args.pg
                               else "sqlite", "ws_deflate": args.ws_deflate}
    for system, m in best.items():
        for transport in TRANSPORTS:
            t = m.transports[transport]
            prefix = f"{system}_{transport}"
            figures[f"{prefix}_frames_per_s"] = round(t["frames_per_s"])
            figures[f"{prefix}_p50_ms"] = round(t["p50_ms"], 1)
            figures[f"{prefix}_p99_ms"] = round(t["p99_ms"], 1)
            figures[f"{prefix}_cut"] = t["closed"]
        figures[f"{system}_server_cpu_pct"] = round(m.cpu["server"])
        figures[f"{system}_client_cpu_pct"] = round(m.cpu["clients"])
        figures[f"{system}_machine_cpu_pct"] = round(m.cpu["machine"])

    if "chainwire" in best:
        cw = best["chainwire"]
        for other in ("limit", "nchan"):
            if other not in best:
                continue
            parts = []
            for transport in TRANSPORTS:
                a = cw.transports[transport]["frames_per_s"]
                b = best[other].transports[transport]["frames_per_s"]
                ratio = a / b if b else float("nan")
                figures[f"chainwire_over_{other}_{transport}"] = round(ratio, 3)
                parts.append(f"{transport} {fmt(ratio, '.0%')}")
            # Frames per server CPU-second (both transports share the process): how much
            # work a delivery costs, whatever the neighbours left of the machine.
            cpu_a, cpu_b = cw.cpu["server"], best[other].cpu["server"]
            total_a = sum(t["frames_per_s"] for t in cw.transports.values())
            total_b = sum(t["frames_per_s"] for t in best[other].transports.values())
            eff_a = total_a / cpu_a * 100 if cpu_a else float("nan")
            eff_b = total_b / cpu_b * 100 if cpu_b else float("nan")
            figures["chainwire_frames_per_cpu_s"] = round(eff_a) if eff_a == eff_a else None
            figures[f"{other}_frames_per_cpu_s"] = round(eff_b) if eff_b == eff_b else None
            print(f"chainwire / {other}: frames/s {', '.join(parts)}; frames per server "
                  f"CPU-second {fmt(eff_a, ',.0f')} vs {fmt(eff_b, ',.0f')} "
                  f"({fmt(eff_a / eff_b, '.0%')})")
        goals = {}
        for transport in TRANSPORTS:
            rate = cw.transports[transport]["frames_per_s"]
            goals[f"{transport}_frames_per_s"] = rate >= GOALS[transport]
            print(f"goal: chainwire {transport.upper()} at least {GOALS[transport]:,} frames/s: "
                  f"{rate:,.0f} {'PASS' if goals[f'{transport}_frames_per_s'] else 'FAIL'}")
        p99 = max(cw.transports[t]["p99_ms"] for t in TRANSPORTS)
        goals["p99"] = p99 <= window + 50
        print(f"goal: chainwire p99 at most the window + 50 ms = {window + 50:.0f} ms: "
              f"{p99:,.1f} ms {'PASS' if goals['p99'] else 'FAIL'}")
        figures["goals"] = goals
        figures["goal_met"] = all(goals.values())
    for system, reason in skipped.items():
        figures[f"{system}_skipped"] = reason
    return figures


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    skipped: dict[str, str] = {}
    systems = [s for s in args.systems.split(",")
               if not (s == "limit" and args.skip_limit) and not (s == "nchan" and args.skip_nchan)]
    if "nchan" not in systems:
        if "nchan" not in args.systems.split(","):
            skipped["nchan"] = "not asked for (--systems)"
        else:
            skipped["nchan"] = "--skip-nchan"
    elif (reason := nchan_missing()) is not None:
        skipped["nchan"] = reason
        systems.remove("nchan")
    runs: dict[str, list[Measurement]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory(prefix="cw-fanout-") as tmp:
        workdir = Path(tmp)
        for round_no in range(args.rounds):
            for system in list(runs):
                print(f"round {round_no + 1}: {system} ...", flush=True)
                try:
                    async with SYSTEMS[system](args, workdir) as target:
                        runs[system].append(await measure(system, target, args, workdir))
                except Exception as exc:  # one system failing must not lose the others
                    if system == "chainwire":
                        raise
                    skipped[system] = f"failed: {type(exc).__name__}: {exc}"[:500]
                    del runs[system]
                    print(f"    {system} failed: {exc}", flush=True)
    figures = report(args, runs, skipped)
    print(json.dumps(figures))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="half SSE, half WS")
    parser.add_argument("--rate", type=float, default=100,
                        help="batches of 10 events published per second")
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2, help="published, not measured")
    parser.add_argument("--drain", type=float, default=1,
                        help="seconds to wait for late frames after publishing ends")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of every system, alternated; the best of each is kept")
    parser.add_argument("--systems", default="limit,chainwire,nchan",
                        help="which systems, in this order (comma-separated)")
    parser.add_argument("--skip-nchan", action="store_true")
    parser.add_argument("--skip-limit", action="store_true")
    parser.add_argument("--nchan-workers", type=int, default=1)
    parser.add_argument("--ws-deflate", action="store_true",
                        help="WS clients offer permessage-deflate (browsers and the "
                             "websockets client do) and Chainwire accepts it "
                             "(CHAINWIRE_WS_COMPRESSION=true)")
    parser.add_argument("--window-ms", type=float, default=500,
                        help="Chainwire's batch window, for the p99 goal (window + 50 ms)")
    parser.add_argument("--pg", action="store_true",
                        help="Chainwire on a fresh PostgreSQL database instead of SQLite")
    parser.add_argument("--admin-url", default=os.environ.get(
        "CHAINWIRE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100 clients, 20 batches/s, 3 s (+1 s warm-up)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.rate, args.seconds, args.warmup = 100, 20, 3, 1
    if args.clients < 2 or args.clients % 2:
        parser.error("--clients must be an even number, at least 2")
    args.procs = max(1, min(args.procs, args.clients // 2))
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}: choose from "
                     f"{', '.join(SYSTEMS)}")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
