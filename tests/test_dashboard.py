"""The dashboard in a real headless Chromium (Debian's), against a real server."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from batcher.events import Event
from tests.bed.electrumx import ElectrumXServer
from tests.stream.live import live_server

CHROMIUM = "/usr/bin/chromium"
# Chromium's background services try the network; this machine has none (see env docs).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed (scripts/test "
    "installs it when run as root)")


@pytest.mark.anyio
async def test_dashboard_shows_live_blocks_and_watches_addresses(
    electrumx_servers: list[ElectrumXServer], tmp_path: Path,
) -> None:
    async with live_server(electrumx_servers) as live, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{live.http}/")
            await expect(page.locator("#connection")).to_have_text("live", timeout=10_000)
            await expect(page.locator("#network")).to_have_text("regtest")
            # A block arrives through the batcher, the store and the SSE stream.
            await live.emit(Event("block", "777", {"height": 777, "hash": "ab" * 32,
                                                   "prev_hash": "cd" * 32,
                                                   "time": int(time.time())}, time.time()))
            await expect(page.locator('#blocks tr[data-height="777"]')).to_be_visible(
                timeout=10_000)
            # The pool's servers and the batcher's figures are shown.
            await expect(page.locator("#servers tr")).to_have_count(
                len(electrumx_servers), timeout=10_000)
            await expect(page.locator("#batcher")).to_contain_text("events batched")
            # Watching: a bad address is refused with its reason, a good one is added.
            await page.fill("#watch-address", "not-an-address")
            await page.click("#watch-form button")
            await expect(page.locator("#watch-status")).to_contain_text("not-an-address")
            good = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
            await page.fill("#watch-address", good)
            await page.click("#watch-form button")
            await expect(page.locator("#watch-status")).to_have_text(f"watching {good}")
            assert await live.services.store.watch_list() == [good]
            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            await browser.close()
