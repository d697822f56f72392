"""Benchmark: 1000 transactions fetched (a) one request at a time on one server, (b) as one
batch on one server, (c) through ServerPool over 3 servers -- each server behind a proxy
adding 50 ms each way, as public servers have.

Runs its own regtest node and 3 ElectrumX servers (tests/bed). Prints a table and ends
with one JSON line of figures.

    .venv/bin/python -m bench.electrum_batch [--count 1000] [--delay 0.05]
        [--sequential N]     # (a) on the first N txids only, extrapolated to --count
        [--pad-wait stock]   # ElectrumX's stock 1 s hold of small messages (default 0.01)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.proxy import DelayProxy
from stream.electrum import ServerPool
from stream.electrum.config import PoolConfig
from stream.electrum.session import ElectrumSession
from stream.electrum.urls import parse_server

GET = "blockchain.transaction.get"


def _ignore(method: str, args: Any) -> None:
    pass


async def sequential(url: str, txids: list[str]) -> tuple[float, list[Any]]:
    config = PoolConfig(network="regtest", request_timeout=600)
    session = await ElectrumSession.open(parse_server(url), config, _ignore)
    try:
        start = time.perf_counter()
        out = [await session.request(GET, [txid], time_limit=60) for txid in txids]
        return time.perf_counter() - start, out
    finally:
        await session.close()


async def one_batch(url: str, txids: list[str]) -> tuple[float, list[Any]]:
    config = PoolConfig(network="regtest", request_timeout=600)
    session = await ElectrumSession.open(parse_server(url), config, _ignore)
    try:
        start = time.perf_counter()
        out = await session.batch([(GET, [txid]) for txid in txids], time_limit=600)
        return time.perf_counter() - start, out
    finally:
        await session.close()


async def through_pool(urls: list[str], txids: list[str]) -> tuple[float, float, list[Any]]:
    """(cold: lazy pool, connections included; warm: the same batch again)."""
    async with ServerPool(urls, network="regtest") as pool:
        start = time.perf_counter()
        await pool.get_transactions_batch(txids)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        out = await pool.get_transactions_batch(txids)
        warm = time.perf_counter() - start
        spread = {s["url"]: s["requests"] for s in pool.stats()["servers"]}
        print(f"    pool requests per server: {spread}")
        return cold, warm, out


async def run(args: argparse.Namespace, urls: list[str], txids: list[str],
              expected: list[str]) -> dict[str, Any]:
    async with DelayProxy(*_hp(urls[0]), delay=args.delay) as p1, \
            DelayProxy(*_hp(urls[1]), delay=args.delay) as p2, \
            DelayProxy(*_hp(urls[2]), delay=args.delay) as p3:
        proxied = [p.url() for p in (p1, p2, p3)]
        sample = txids[: args.sequential or len(txids)]
        t_a, out_a = await sequential(proxied[0], sample)
        assert out_a == expected[: len(sample)], "(a) returned wrong transactions"
        a = t_a * len(txids) / len(sample)
        t_b, out_b = await one_batch(proxied[0], txids)
        assert out_b == expected, "(b) returned wrong transactions"
        c_cold, c_warm, out_c = await through_pool(proxied, txids)
        assert out_c == expected, "(c) returned wrong transactions"
    return {
        "count": len(txids), "delay_ms": args.delay * 1000, "pad_wait": args.pad_wait,
        "a_sequential_s": round(a, 3), "a_measured_on": len(sample),
        "b_one_batch_s": round(t_b, 3), "c_pool_cold_s": round(c_cold, 3),
        "c_pool_s": round(c_warm, 3),
        "b_over_c": round(t_b / c_warm, 2), "a_over_c": round(a / c_warm, 1),
        "b_over_c_cold": round(t_b / c_cold, 2), "a_over_c_cold": round(a / c_cold, 1),
    }


def _hp(url: str) -> tuple[str, int]:
    address = parse_server(url)
    return address.host, address.port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--sequential", type=int, default=0,
                        help="measure (a) on this many txids and extrapolate (0: all)")
    parser.add_argument("--pad-wait", default="0.01",
                        help="ElectrumX small-message hold in seconds, or 'stock' (1 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.bed.electrumx import ElectrumXServer, make_certs, start_all
    from tests.bed.node import RegtestNode

    pad = None if args.pad_wait == "stock" else float(args.pad_wait)
    node = RegtestNode().start()
    servers: list[Any] = []
    try:
        txids = node.make_many_txs(args.count)
        node.mine(1)
        expected = [node.raw_transaction(txid).hex() for txid in txids]
        certs = make_certs(Path(tempfile.mkdtemp(prefix="bench-certs-")))
        servers = [ElectrumXServer(node.rpc_url, certs, pad_wait=pad, name=f"bench{i}")
                   for i in range(3)]
        start_all(servers)
        for server in servers:
            server.wait_for_height(node.height)
        figures = anyio.run(run, args, [s.tcp_url for s in servers], txids, expected)
    finally:
        for server in servers:
            server.stop()
        node.stop()
    f = figures
    print(f"\n{f['count']} transactions, +{f['delay_ms']:.0f} ms each way, "
          f"ElectrumX pad wait {args.pad_wait}")
    note = "" if f["a_measured_on"] == f["count"] else f" (extrapolated from {f['a_measured_on']})"
    print(f"  (a) one at a time, 1 server : {f['a_sequential_s']:9.3f} s{note}")
    print(f"  (b) one batch, 1 server     : {f['b_one_batch_s']:9.3f} s")
    print(f"  (c) pool, 3 servers         : {f['c_pool_s']:9.3f} s   "
          f"(cold, connecting lazily: {f['c_pool_cold_s']:.3f} s)")
    print(f"  (b)/(c) = {f['b_over_c']}x (goal >= 2)   (a)/(c) = {f['a_over_c']}x (goal >= 50)")
    print(json.dumps(f))


if __name__ == "__main__":
    main()
