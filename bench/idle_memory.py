"""Memory per idle connection: N idle SSE streams and N idle WebSockets held by a real
``chainwire serve``, next to the bare server stack holding as many, in the same run.

For each system and transport a fresh server process is started
(``bench/idle_memory_server.py``), warmed up (a few connections opened and closed, so
first-use costs are not counted), then measured: its RSS (``VmRSS``, after a full
``gc.collect()``) with no connection, then with ``--clients`` idle connections held by a
client process (``bench/fanout_client.py``: SSE streams that received their first message;
WebSockets that sent ``{"op":"subscribe"}`` and got ``subscribed``). The figure is
(RSS with N - RSS with 0) / N.

- **chainwire**: ``chainwire serve`` with a SQLite store in a temporary directory,
  ``CHAINWIRE_NETWORK=regtest`` and an Electrum server nobody listens on (no Electrum is
  needed for idle streams), the connection caps raised for the bench (every client comes
  from 127.0.0.1); every other setting keeps its default.
- **baseline**: uvicorn (h11, ``websockets-sansio``) + Starlette holding the same
  connections with nothing of Chainwire (a ``StreamingResponse`` that sent one comment; a
  WebSocket that answered ``subscribe``): what the server stack costs.

``--tracemalloc`` runs the Chainwire servers under tracemalloc instead and prints where the
per-connection memory is allocated (the tracebacks that grew most between 0 and N
connections; RSS figures are then inflated by tracemalloc itself). Prints a table, then
exactly one JSON line.

    .venv/bin/python -m bench.idle_memory [--clients 1000] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import free_port, python_module, spawn, wait_port

TRANSPORTS = ("sse", "ws")
SYSTEMS = ("baseline", "chainwire")
AIM_KB = 20  # the aim, per idle connection
WARMUP_CLIENTS = 20
KB = 1000  # figures in kB of 1000 bytes (VmRSS is read in KiB and turned into bytes)


@dataclass
class Figure:
    system: str
    transport: str
    clients: int
    rss_idle: int  # bytes, no connection
    rss_held: int  # bytes, ``clients`` connections
    traced_idle: int  # tracemalloc's traced bytes (-1 without it)
    traced_held: int
    top: list[dict[str, Any]]

    @property
    def per_connection(self) -> float:
        return (self.rss_held - self.rss_idle) / self.clients

    @property
    def traced_per_connection(self) -> float | None:
        if self.traced_idle < 0:
            return None
        return (self.traced_held - self.traced_idle) / self.clients


def chainwire_env(workdir: Path, clients: int) -> dict[str, str]:
    room = str(clients + WARMUP_CLIENTS + 10)
    return {
        "CHAINWIRE_NETWORK": "regtest",
        "CHAINWIRE_SERVERS": f"tcp://127.0.0.1:{free_port()}",  # nobody: no Electrum needed
        "CHAINWIRE_DATABASE_URL": f"sqlite:///{workdir}/chainwire.db",
        "CHAINWIRE_MAX_CONNECTIONS_PER_IP": room,
        "CHAINWIRE_MAX_CONNECTIONS": room,
        "CHAINWIRE_LOG_LEVEL": "warning",
    }


def client_argv(transport: str, port: int, n: int) -> list[str]:
    if transport == "sse":
        return python_module("bench.fanout_client", "--sse-url",
                             f"http://127.0.0.1:{port}/events", "--sse", str(n))
    return python_module("bench.fanout_client", "--ws-url", f"ws://127.0.0.1:{port}/ws",
                         "--ws", str(n), "--ws-subscribe")


@contextlib.asynccontextmanager
async def hold(transport: str, port: int, n: int, workdir: Path, name: str
               ) -> AsyncIterator[None]:
    """A client process holding ``n`` idle connections (entered once all are ready)."""
    async with spawn(name, client_argv(transport, port, n), workdir, stop="stop") as client:
        await client.expect("ready", within=60 + n / 20)
        yield


async def measure_one(system: str, transport: str, args: argparse.Namespace,
                      workdir: Path) -> Figure:
    port = free_port()
    env = {"PYTHONTRACEMALLOC": "25"} if args.tracemalloc and system == "chainwire" else {}
    if system == "chainwire":
        env |= chainwire_env(workdir, args.clients)
    argv = python_module("bench.idle_memory_server", system, "--port", str(port))
    name = f"{system}-{transport}"
    async with spawn(f"{name}-server", argv, workdir, env=env) as server:
        await wait_port(port, within=30)

        async def ask(command: str, answer: str) -> str:
            server.send(command)
            return await server.expect(answer, within=60)

        async with hold(transport, port, WARMUP_CLIENTS, workdir, f"{name}-warmup"):
            pass
        await asyncio.sleep(args.settle)  # the warm-up connections' handlers finish
        _, rss_idle, _, traced_idle = (await ask("measure", "rss")).split()
        if args.tracemalloc:
            await ask("snap", "snapped")
        async with hold(transport, port, args.clients, workdir, f"{name}-clients"):
            await asyncio.sleep(args.settle)
            _, rss_held, _, traced_held = (await ask("measure", "rss")).split()
            top = json.loads(await ask(f"top {args.top}", "[")) if args.tracemalloc else []
    return Figure(system, transport, args.clients, int(rss_idle), int(rss_held),
                  int(traced_idle), int(traced_held), top)


def report(figures: list[Figure], args: argparse.Namespace) -> dict[str, Any]:
    by = {(f.system, f.transport): f for f in figures}
    print(f"\nMemory per idle connection, {args.clients} connections per transport "
          "(RSS with N - RSS with 0) / N, kB:")
    print(f"{'transport':<10} {'baseline':>9} {'chainwire':>10} {'chainwire adds':>15} "
          f"{'aim':>6}  result")
    result: dict[str, Any] = {"clients": args.clients, "aim_kb": AIM_KB,
                              "tracemalloc": args.tracemalloc}
    for transport in TRANSPORTS:
        base = by.get(("baseline", transport))
        ours = by.get(("chainwire", transport))
        base_kb = base.per_connection / KB if base else None
        ours_kb = ours.per_connection / KB if ours else None
        adds = ours_kb - base_kb if ours_kb is not None and base_kb is not None else None
        verdict = "" if ours_kb is None or args.tracemalloc else (
            "PASS" if ours_kb <= AIM_KB else "FAIL")
        print(f"{transport.upper():<10} {_kb(base_kb):>9} {_kb(ours_kb):>10} {_kb(adds):>15} "
              f"{AIM_KB:>6}  {verdict}")
        result[transport] = {"baseline_kb": _round(base_kb), "chainwire_kb": _round(ours_kb),
                             "chainwire_adds_kb": _round(adds), "pass": verdict == "PASS"}
        if ours is not None and ours.traced_per_connection is not None:
            result[transport]["traced_kb"] = _round(ours.traced_per_connection / KB)
    for figure in figures:
        if figure.top:
            traced = figure.traced_per_connection or 0.0
            print(f"\n{figure.system} {figure.transport.upper()}: tracemalloc "
                  f"{traced / KB:.1f} kB per connection; top growth (bytes per connection):")
            for row in figure.top:
                print(f"  {row['bytes'] / figure.clients:8.0f}  {row['where']}")
    return result


def _kb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def main(args: argparse.Namespace) -> None:
    figures = []
    with tempfile.TemporaryDirectory(prefix="chainwire-idlemem-") as tmp:
        workdir = Path(tmp)
        systems = ("chainwire",) if args.tracemalloc else SYSTEMS
        for transport in TRANSPORTS:
            for system in systems:
                figures.append(await measure_one(system, transport, args, workdir))
                print(f"{system} {transport}: {figures[-1].per_connection / KB:.1f} kB "
                      "per connection", flush=True)
    print(json.dumps(report(figures, args)), flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000,
                        help="idle connections per transport (default 1000)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait before each measurement (default 1)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="Chainwire only, under tracemalloc: where the memory goes")
    parser.add_argument("--top", type=int, default=25,
                        help="tracebacks to print with --tracemalloc (default 25)")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
