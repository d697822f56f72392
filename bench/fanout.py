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
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.fanout_client import BUCKET
from bench.fanout_report import TRANSPORTS, Measurement, report
from bench.fanout_server import raise_fd_limit
from bench.procs import (
    Proc,
    children,
    cpu_percent,
    free_port,
    python_module,
    snapshot,
    spawn,
    wait_port,
)

NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"


@dataclass
class Target:
    """Where a system's clients connect, and which processes are its server."""

    sse_url: str
    ws_url: str
    server_pids: list[int]
    publisher: Proc
    publisher_is_server: bool
    ws_subscribe: bool = False


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
