"""``GET /api/v1/address/{address}/balance``: read from real ElectrumX, and a typed 503 when
no Electrum server can answer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import anyio
import httpx
import pytest

from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.server_process import free_port
from tests.stream.live import live_server

pytestmark = pytest.mark.anyio



async def test_balance_follows_a_payment_from_mempool_to_confirmed(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
) -> None:
    wait_for_tip()
    address = regtest_node.new_address("p2wpkh")
    async with live_server(electrumx_servers) as live, httpx.AsyncClient(timeout=30) as client:
        url = f"{live.http}/api/v1/address/{address}/balance"
        assert (await client.get(url)).json() == {
            "address": address, "confirmed_sats": 0, "unconfirmed_sats": 0}

        await anyio.to_thread.run_sync(regtest_node.pay, address, 31_000)
        with anyio.fail_after(20):  # until every server's mempool has it
            while (body := (await client.get(url)).json())["unconfirmed_sats"] == 0:
                await anyio.sleep(0.1)
        assert body == {"address": address, "confirmed_sats": 0, "unconfirmed_sats": 31_000}

        await anyio.to_thread.run_sync(regtest_node.mine)
        wait_for_tip()
        with anyio.fail_after(20):
            while (body := (await client.get(url)).json())["confirmed_sats"] == 0:
                await anyio.sleep(0.1)
        assert body == {"address": address, "confirmed_sats": 31_000, "unconfirmed_sats": 0}


async def test_balance_is_a_typed_503_when_no_electrum_server_answers(
    regtest_node: RegtestNode,
) -> None:
    address = regtest_node.new_address("p2wpkh")
    nobody = cast(ElectrumXServer, SimpleNamespace(tcp_url=f"tcp://127.0.0.1:{free_port()}"))
    async with live_server([nobody]) as live, httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{live.http}/api/v1/address/{address}/balance")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        # A bad address is still the client's 400, checked before Electrum is asked.
        response = await client.get(f"{live.http}/api/v1/address/bc1qnope/balance")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_address"
