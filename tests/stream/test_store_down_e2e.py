"""The store failing under a request is a typed 503 to retry, never a plain 500."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from batcher.store import StoreUnavailable
from tests.bed.electrumx import ElectrumXServer
from tests.stream.live import live_server

pytestmark = pytest.mark.anyio

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


async def test_a_store_that_fails_under_a_request_is_a_typed_503(
    electrumx_servers: list[ElectrumXServer], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with live_server(electrumx_servers) as live, httpx.AsyncClient(timeout=10) as client:
        store: Any = live.services.store

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("connection refused")  # as the engines raise it

        for method in ("watch_add", "recent_blocks", "batches_after"):
            monkeypatch.setattr(store, method, down)
        with caplog.at_level(logging.WARNING):
            answers = [
                await client.post(f"{live.http}/api/v1/watch", json={"addresses": [ADDRESS]}),
                await client.get(f"{live.http}/api/v1/blocks/recent"),
                await client.get(f"{live.http}/api/v1/batches?after=0"),
            ]
        for response in answers:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "unavailable"
            assert response.headers["retry-after"] == "2"
        assert "Traceback" not in caplog.text
        assert sum("store unavailable" in r.getMessage() for r in caplog.records) == 3
