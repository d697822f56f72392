"""First end-to-end test through the bed: a plain aiorpcx client and a real ElectrumX server."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from aiorpcx import Notification, RPCSession, connect_rs

from tests.bed.electrumx import BedCerts, ElectrumXServer
from tests.bed.node import RegtestNode, scripthash

pytestmark = pytest.mark.anyio


class _Client(RPCSession):  # type: ignore[misc]  # aiorpcx is untyped
    """Collects the server's notifications in a stream."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_notes, self.notes = anyio.create_memory_object_stream[tuple[str, list[Any]]](100)

    async def handle_request(self, request: Any) -> None:
        if isinstance(request, Notification):
            await self.send_notes.send((request.method, list(request.args)))

    async def next_notification(self, method: str) -> list[Any]:
        with anyio.fail_after(10):
            async for got, args in self.notes:
                if got == method:
                    return args
        raise AssertionError("notification stream ended")


@asynccontextmanager
async def _connect(port: int, ssl_context: ssl.SSLContext | None = None
                   ) -> AsyncIterator[_Client]:
    async with connect_rs("127.0.0.1", port, session_factory=_Client,
                          ssl=ssl_context) as session:
        try:
            yield session
        finally:
            session.send_notes.close()
            session.notes.close()


async def _negotiate(session: _Client) -> str:
    software, version = await session.send_request(
        "server.version", ["chainwire-e2e", ["1.4", "1.6"]])
    assert "ElectrumX" in software
    return str(version)


async def test_client_negotiates_scripthash_protocol_and_sees_new_headers(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer]) -> None:
    async with _connect(electrumx_servers[0].tcp_port) as session:
        version = await _negotiate(session)
        assert tuple(map(int, version.split("."))) >= (1, 4)
        assert tuple(map(int, version.split("."))) < (1, 7)  # 1.7 drops blockchain.scripthash.*

        tip = await session.send_request("blockchain.headers.subscribe")
        assert tip == {"height": regtest_node.height,
                       "hex": regtest_node.header(regtest_node.height).hex()}

        regtest_node.mine()
        while True:
            (header,) = await session.next_notification("blockchain.headers.subscribe")
            if header["height"] == regtest_node.height:
                break
        assert header["hex"] == regtest_node.header(regtest_node.height).hex()


async def test_client_sees_a_scripthash_status_change_after_a_payment(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer]) -> None:
    address = regtest_node.new_address()
    sh = scripthash(address)
    async with _connect(electrumx_servers[1].tcp_port) as session:
        await _negotiate(session)
        assert await session.send_request("blockchain.scripthash.subscribe", [sh]) is None

        txid = regtest_node.pay(address, 42_000)
        got_sh, status = await session.next_notification("blockchain.scripthash.subscribe")
        assert got_sh == sh
        assert status is not None
        history = await session.send_request("blockchain.scripthash.get_history", [sh])
        assert [(h["tx_hash"], h["height"]) for h in history] == [(txid, 0)]

        regtest_node.mine()  # confirming changes the status again
        _, confirmed_status = await session.next_notification("blockchain.scripthash.subscribe")
        assert confirmed_status not in (None, status)


async def test_client_connects_over_ssl_with_the_self_signed_certificate(
        regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer],
        bed_certs: BedCerts) -> None:
    # Like Electrum clients, accept the server's self-signed certificate without a CA.
    async with _connect(electrumx_servers[2].ssl_port,
                        bed_certs.client_context(verify=False)) as session:
        await _negotiate(session)
        tip = await session.send_request("blockchain.headers.subscribe")
        assert tip["height"] == regtest_node.height
