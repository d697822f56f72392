"""The server side of ``bench/idle_memory.py``: one process per system under test.

    python -m bench.idle_memory_server chainwire --port P   # CHAINWIRE_* from the environment
    python -m bench.idle_memory_server baseline --port P

- ``chainwire``: ``chainwire serve`` itself (``stream.cli.main(["serve", ...])``, configured
  by the environment the bench sets: SQLite in a temporary directory, regtest, an Electrum
  server nobody listens on, the per-IP cap raised);
- ``baseline``: the server stack alone, configured as Chainwire configures it where it
  matters for memory (uvicorn, h11, ``websockets-sansio``): a Starlette app whose
  ``/events`` is a ``StreamingResponse`` that sends one comment and then waits, and whose
  ``/ws`` accepts, answers the first message with ``{"op":"subscribed"}`` and then waits.

A thread reads commands on stdin and answers on stdout, so the event loop is never
touched: ``measure`` (a full ``gc.collect()``, then ``rss <VmRSS bytes> traced <bytes>``,
traced -1 without tracemalloc), ``snap`` (keep a tracemalloc snapshot), ``top N`` (one JSON
line: the N tracebacks whose memory grew most since ``snap``), ``quit`` (SIGTERM to itself:
the server's own graceful shutdown). Start it with ``PYTHONTRACEMALLOC=F`` for the last two.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import sys
import threading
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["rss_bytes"]


def rss_bytes(pid: int | None = None) -> int:
    """VmRSS of ``pid`` (this process by default), in bytes."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/PID/status")


def _top(before: tracemalloc.Snapshot | None, n: int) -> list[dict[str, object]]:
    after = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    if before is None:
        return []
    rows = []
    for diff in after.compare_to(before, "traceback")[:n]:
        frames = [f"{Path(f.filename).name}:{f.lineno}" for f in diff.traceback]
        rows.append({"bytes": diff.size_diff, "blocks": diff.count_diff,
                     "where": " < ".join(reversed(frames[-6:]))})
    return rows


def _commands() -> None:
    snapshot: tracemalloc.Snapshot | None = None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "measure":
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else -1
            print(f"rss {rss_bytes()} traced {traced}", flush=True)
        elif words[0] == "snap" and tracemalloc.is_tracing():
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            print("snapped", flush=True)
        elif words[0] == "top" and tracemalloc.is_tracing():
            gc.collect()
            print(json.dumps(_top(snapshot, int(words[1]))), flush=True)
        elif words[0] == "quit":
            break
    os.kill(os.getpid(), signal.SIGTERM)  # quit or EOF: the server's own shutdown


def _baseline(port: int) -> None:
    import anyio
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def events(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b": ok\r\n\r\n"
            await anyio.Event().wait()  # idle until the client leaves

        return StreamingResponse(body(), media_type="text/event-stream")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.send_text('{"op":"subscribed"}')
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    app = Starlette(routes=[Route("/events", events), WebSocketRoute("/ws", ws)])
    uvicorn.run(app, host="127.0.0.1", port=port, http="h11", ws="websockets-sansio",
                log_level="error", lifespan="off", backlog=4096)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("system", choices=["chainwire", "baseline"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))  # thousands of sockets
    threading.Thread(target=_commands, daemon=True).start()
    if args.system == "baseline":
        _baseline(args.port)
        return
    from stream.cli import main as chainwire

    sys.exit(chainwire(["serve", "--host", "127.0.0.1", "--port", str(args.port),
                        "--env-file", "/nonexistent/.env"]))


if __name__ == "__main__":
    main()
