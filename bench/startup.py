"""Start-up with a large watch list: a real ``chainwire serve`` over PostgreSQL and the
regtest bed's ElectrumX servers.

For each watch-list size (the baseline: an empty list, then ``--addresses``), in a fresh
database (created and dropped): store the addresses, start ``chainwire serve`` and time,
from the spawn of the process,

- **healthy**: the first ``/healthz`` 200;
- **restored**: ``/api/v1/stats`` shows the watch list read (``restoring`` 0);
- **all subscribed**: nothing left to subscribe and the pool carrying every address
  (``pool.subscriptions.scripthashes``).

Then, on the same database with one known transaction per 5 addresses, the store reads
start-up needs, side by side: the old per-address path (``known_txs`` once per address)
and the bulk one (``known_txs_many`` by pages, and ``logged_amounts``).

    .venv/bin/python -m bench.startup                      # 10k and 100k addresses
    .venv/bin/python -m bench.startup --addresses 2000     # quick
    .venv/bin/python -m bench.startup --addresses 10000 --addresses 100000 --timeout 900

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from embit.networks import NETWORKS
from embit.script import Script

from batcher.store.postgres import PostgresStore
from bench.persist import fresh_database
from bench.procs import ROOT, free_port
from stream.producers.restore import RESTORE_PAGE
from tests.bed.bed import Bed

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Startup:
    addresses: int
    healthy_s: float
    restored_s: float | None
    subscribed_s: float | None
    scripthashes: int


@dataclass
class Reads:
    addresses: int
    known_txs: int
    per_address_s: float
    bulk_s: float


def addresses(n: int) -> list[str]:
    """``n`` distinct regtest P2WPKH addresses nobody pays."""
    return [str(Script(b"\x00\x14" + (9_000_000 + i).to_bytes(20, "big"))
                .address(NETWORKS["regtest"])) for i in range(n)]


async def seed(url: str, watch: list[str]) -> None:
    async with PostgresStore(url) as store:
        for i in range(0, len(watch), 10_000):
            await store.watch_add(watch[i:i + 10_000])


async def measure_startup(url: str, servers: str, n: int, limit_s: float) -> Startup:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINWIRE_")}
    env.update(CHAINWIRE_DATABASE_URL=url, CHAINWIRE_SERVERS=servers,
               CHAINWIRE_NETWORK="regtest", CHAINWIRE_LOG_LEVEL="warning",
               CHAINWIRE_MAX_WATCHED=str(max(n, 1)), PYTHONPATH=str(ROOT))
    env.pop("PORT", None)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream.cli", "serve", "--port", str(port), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    result = Startup(n, 0.0, None, None, 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = started + limit_s
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        result.healthy_s = time.monotonic() - started
                        break
                await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"not healthy within {limit_s} s")
            while time.monotonic() < deadline:
                stats = (await http.get("/api/v1/stats")).json()
                mine = stats["producers"]["addresses"]
                now = time.monotonic() - started
                if result.restored_s is None and mine["restoring"] == 0:
                    result.restored_s = now
                result.scripthashes = stats["pool"]["subscriptions"]["scripthashes"]
                if (result.restored_s is not None and mine["to_subscribe"] == 0
                        and result.scripthashes >= n):
                    result.subscribed_s = now
                    break
                await asyncio.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return result


async def measure_reads(url: str, watch: list[str]) -> Reads:
    """The old per-address restore reads against the bulk ones, on the same rows."""
    async with PostgresStore(url) as store:
        known = watch[::5]
        for i, address in enumerate(known):
            await store.set_known_txs(address, {f"{i:064x}": 100 + i % 50})
        t0 = time.monotonic()
        listed = await store.watch_list()
        for address in listed:
            await store.known_txs(address)
        t1 = time.monotonic()
        listed = await store.watch_list()
        for i in range(0, len(listed), RESTORE_PAGE):
            page = listed[i:i + RESTORE_PAGE]
            found = await store.known_txs_many(page)
            await store.logged_amounts(list(found))
        t2 = time.monotonic()
    return Reads(len(watch), len(known), t1 - t0, t2 - t1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [0, *args.addresses]
    print(f"starting the bed ({args.servers} ElectrumX servers)...", flush=True)
    bed = Bed(n_servers=args.servers).start()
    startups: list[Startup] = []
    reads: list[Reads] = []
    try:
        for n in sizes:
            watch = addresses(n)
            async with fresh_database(args.admin_url) as url:
                await seed(url, watch)
                print(f"{n} addresses: starting chainwire serve...", flush=True)
                startups.append(await measure_startup(url, bed.chainwire_servers(), n,
                                                      args.timeout))
                if n:
                    reads.append(await measure_reads(url, watch))
    finally:
        bed.close()
    report(startups, reads)
    return {"bench": "startup", "servers": args.servers,
            "startup": [asdict(s) for s in startups], "reads": [asdict(r) for r in reads]}


def report(startups: list[Startup], reads: list[Reads]) -> None:
    base = startups[0]
    print("\nstart-up of chainwire serve (s from spawn; baseline: empty watch list)")
    print(f"{'addresses':>10} {'healthy':>9} {'vs base':>8} {'restored':>9} "
          f"{'subscribed':>11} {'scripthashes':>13}")
    for s in startups:
        restored = "-" if s.restored_s is None else f"{s.restored_s:.2f}"
        subscribed = "timeout" if s.subscribed_s is None else f"{s.subscribed_s:.2f}"
        print(f"{s.addresses:>10} {s.healthy_s:>9.2f} {s.healthy_s - base.healthy_s:>+8.2f} "
              f"{restored:>9} {subscribed:>11} {s.scripthashes:>13}")
    if reads:
        print("\nstart-up store reads (s): per address (before) vs bulk pages (now)")
        print(f"{'addresses':>10} {'known txs':>10} {'per address':>12} {'bulk':>8} {'ratio':>7}")
        for r in reads:
            ratio = r.per_address_s / r.bulk_s if r.bulk_s else float("inf")
            print(f"{r.addresses:>10} {r.known_txs:>10} {r.per_address_s:>12.2f} "
                  f"{r.bulk_s:>8.2f} {ratio:>6.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, action="append",
                        help="watch-list size (repeatable; default 10000 and 100000)")
    parser.add_argument("--servers", type=int, default=3, help="ElectrumX servers (3)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for each start-up to finish subscribing")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    args.addresses = args.addresses or [10_000, 100_000]
    if any(n < 1 for n in args.addresses):
        parser.error("--addresses must be >= 1")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
