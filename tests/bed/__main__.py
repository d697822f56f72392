"""Run the bed by hand: a regtest node and ElectrumX servers on fixed local ports.

    python -m tests.bed [--rpc-port 18443] [--base-port 20001] [--servers 3]
                        [--mine-every SECONDS] [--pay-every SECONDS --watch ADDR ...]

Server i (1-based) listens on TCP base+10*(i-1), SSL base+10*(i-1)+1 and ElectrumX's admin
RPC base+10*(i-1)+2: 20001/20002/20003, 20011/20012/20013, 20021/20022/20023 by default.
The node speaks bitcoind's JSON-RPC (user/pass) on --rpc-port; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from tests.bed.bed import Bed
from tests.bed.electrumx import ElectrumXError
from tests.bed.node import address_to_script

logger = logging.getLogger("tests.bed")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rpc-port", type=int, default=18443, help="node JSON-RPC port (18443)")
    p.add_argument("--base-port", type=int, default=20001,
                   help="first ElectrumX port (20001); see above")
    p.add_argument("--servers", type=int, default=3, help="number of ElectrumX servers (3)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep DBs, logs and certificates here (default: a temp dir, deleted)")
    p.add_argument("--mine-every", type=float, default=0, metavar="SECONDS",
                   help="mine a block every SECONDS (0: only on request)")
    p.add_argument("--pay-every", type=float, default=0, metavar="SECONDS",
                   help="pay each --watch address every SECONDS (0: never)")
    p.add_argument("--watch", action="append", default=[], metavar="ADDR",
                   help="a regtest address to pay periodically (repeatable)")
    p.add_argument("--pay-sats", type=int, default=150_000, help="sats per payment (150000)")
    p.add_argument("--stock-padding", action="store_true",
                   help="keep ElectrumX's 1 s hold of small messages (default: 0.01 s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for address in args.watch:
        try:
            address_to_script(address)
        except ValueError as e:
            print(f"error: --watch {e}", file=sys.stderr)
            return 2
    if args.pay_every and not args.watch:
        print("error: --pay-every needs at least one --watch ADDR", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    bed = Bed(args.workdir, n_servers=args.servers, rpc_port=args.rpc_port,
              base_port=args.base_port, pad_wait=None if args.stock_padding else 0.01)
    try:
        bed.start()
    except (ElectrumXError, OSError) as e:
        print(f"error: the bed did not start: {e}", file=sys.stderr)
        return 1
    try:
        node = bed.node
        took = bed.startup_seconds["total"]
        print(f"""
regtest bed up in {took:.2f}s at height {node.height} (work dir {bed.workdir})

bitcoind RPC:   {node.rpc_url}
ElectrumX:      {", ".join(f"{s.tcp_url} / {s.ssl_url}" for s in bed.servers)}
ElectrumX logs: {", ".join(str(s.log_path) for s in bed.servers)}

CHAINWIRE_NETWORK=regtest
CHAINWIRE_SERVERS={bed.chainwire_servers()}

try:  curl -s --user user:pass -d '{{"method":"generatetoaddress","params":[1,"{node.new_address()}"]}}' http://127.0.0.1:{node.port}/
      curl -s --user user:pass -d '{{"method":"sendtoaddress","params":["ADDR",0.5]}}' http://127.0.0.1:{node.port}/
      other methods: getnewaddress, reorg [depth, new_blocks], evict [txid], doublespend [txid],
                     setfeeestimate [sat_per_vB], makemanytxs [n]
Ctrl-C stops the bed.
""", flush=True)  # noqa: E501
        _run(bed, args, stop)
    finally:
        print("stopping the bed...", flush=True)
        bed.close()
    return 0


def _run(bed: Bed, args: argparse.Namespace, stop: threading.Event) -> None:
    now = time.monotonic()
    next_mine = now + args.mine_every if args.mine_every else float("inf")
    # half a period apart from mining, so a demo shows each payment in the mempool first
    next_pay = now + args.pay_every / 2 if args.pay_every else float("inf")
    while not stop.wait(max(0.05, min(next_mine, next_pay, now + 1) - now)):
        now = time.monotonic()
        try:
            if now >= next_pay:
                next_pay = now + args.pay_every
                for address in args.watch:
                    txid = bed.node.pay(address, args.pay_sats)
                    logger.info("paid %d sats to %s in %s", args.pay_sats, address, txid)
            if now >= next_mine:
                next_mine = now + args.mine_every
                (block_hash,) = bed.node.mine()
                logger.info("mined block %d %s", bed.node.height, block_hash)
        except ValueError as e:  # e.g. out of mature coins: keep running
            logger.warning("%s", e)
        for server in bed.servers:
            if not server.is_running:
                logger.warning("%s exited; see %s", server.name, server.log_path)


if __name__ == "__main__":
    sys.exit(main())
