"""A scripted Electrum server, for what no real server does: lie, or lag on purpose.

It speaks protocol 1.4 on 127.0.0.1 (aiorpcx, like ElectrumX): ``server.version``,
``server.ping``, ``blockchain.headers.subscribe`` (its tip) and ``blockchain.block.headers``
(``{"hex", "count", "max"}``). Headers come from ``header_at`` (e.g. the regtest node's
real chain) unless overridden with ``set_header``; ``announce`` changes the tip and notifies
the subscribed clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiorpcx import JSONRPC, RPCError, RPCSession, serve_rs

from stream.producers.headers import BlockHeader
from stream.producers.headers import meets_target as meets

__all__ = ["FakeElectrum", "grind_header"]

HEADERS_SUBSCRIBE = "blockchain.headers.subscribe"
REGTEST_BITS = 0x207FFFFF


def grind_header(prev_hash: str, *, time: int, meets_target: bool, bits: int = REGTEST_BITS,
                 merkle_root: bytes = b"\x11" * 32) -> bytes:
    """An 80-byte header on ``prev_hash`` (display hex) whose hash meets (or, with
    ``meets_target=False``, misses) the target its ``bits`` encode: the nonce is ground."""
    prefix = (
        (0x20000000).to_bytes(4, "little") + bytes.fromhex(prev_hash)[::-1] + merkle_root
        + time.to_bytes(4, "little") + bits.to_bytes(4, "little")
    )
    for nonce in range(1 << 20):
        raw = prefix + nonce.to_bytes(4, "little")
        if meets(BlockHeader.parse(raw)) == meets_target:
            return raw
    raise AssertionError("no nonce found")


class _Session(RPCSession):  # type: ignore[misc]  # aiorpcx is untyped
    def __init__(self, transport: Any, fake: FakeElectrum) -> None:
        super().__init__(transport)
        self.fake = fake
        self.subscribed = False
        fake.sessions.add(self)

    async def handle_request(self, request: Any) -> Any:
        method, args = request.method, list(request.args)
        self.fake.requests.append((method, args))
        if method == "server.version":
            return ["FakeElectrum 0.1", "1.4"]
        if method == "server.ping":
            return None
        if method == HEADERS_SUBSCRIBE:
            self.subscribed = True
            return self.fake.tip_json()
        if method == "blockchain.block.headers":
            start, count = int(args[0]), int(args[1])
            found = []
            for height in range(start, min(start + count, self.fake.tip + 1)):
                header = self.fake.header(height)
                if header is None:
                    break
                found.append(header)
            return {"hex": b"".join(found).hex(), "count": len(found), "max": 2016}
        raise RPCError(JSONRPC.METHOD_NOT_FOUND, f"unknown method {method}")

    async def connection_lost(self) -> None:
        await super().connection_lost()
        self.fake.sessions.discard(self)


class FakeElectrum:
    """Use as ``async with FakeElectrum(node.header, tip=node.height) as fake``; its pool
    URL is ``fake.url``."""

    def __init__(self, header_at: Callable[[int], bytes | None], *, tip: int) -> None:
        self.header_at = header_at
        self.tip = tip
        self.overrides: dict[int, bytes] = {}
        self.sessions: set[_Session] = set()
        self.requests: list[tuple[str, list[Any]]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def header(self, height: int) -> bytes | None:
        if height in self.overrides:
            return self.overrides[height]
        try:
            return self.header_at(height)
        except (IndexError, KeyError, ValueError):
            return None

    def set_header(self, height: int, header: bytes) -> None:
        self.overrides[height] = header

    def tip_json(self) -> dict[str, Any]:
        header = self.header(self.tip)
        return {"height": self.tip, "hex": header.hex() if header is not None else ""}

    async def announce(self, height: int, header: bytes | None = None) -> None:
        """Make ``height`` (with ``header``, if given) the tip and notify subscribers."""
        if header is not None:
            self.set_header(height, header)
        self.tip = height
        for session in list(self.sessions):
            if session.subscribed and not session.is_closing():
                await session.send_notification(HEADERS_SUBSCRIBE, [self.tip_json()])

    async def __aenter__(self) -> FakeElectrum:
        self._server = await serve_rs(lambda transport: _Session(transport, self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for session in list(self.sessions):
            await session.close(force_after=1.0)
        await self._server.wait_closed()
