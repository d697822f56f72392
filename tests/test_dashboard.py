"""The dashboard in a real headless Chromium (Debian's), against a real server."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.async_api import async_playwright, expect
from playwright.sync_api import expect as sync_expect
from playwright.sync_api import sync_playwright

from batcher.events import Event
from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.nginx_process import NGINX, RETRY_LATER, NginxProcess, regtest_env, wait_for_block
from tests.server_process import ChainwireProcess
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


def short(hash_: str) -> str:
    """What app.js shows for a hash or txid (``short``); the full one is the cell's title."""
    return f"{hash_[:10]}\u2026{hash_[-6:]}"


@pytest.mark.anyio
async def test_dashboard_shows_a_mined_block_and_a_watched_payment_from_the_real_chain(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    tmp_path: Path,
) -> None:
    """No synthetic events: the producers follow the bed's chain through ElectrumX, and the
    page shows what they emit (block rows, address activity) over its own EventSource."""
    node = regtest_node
    await wait_for_tip.wait_async()
    address = node.new_address("p2wpkh")
    async with live_server(electrumx_servers, producers=True) as live, \
            async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{live.http}/")
            await expect(page.locator("#connection")).to_have_text("live", timeout=10_000)
            # Watch through the page's own form, then pay the address on the bed.
            await page.fill("#watch-address", address)
            await page.click("#watch-form button")
            await expect(page.locator("#watch-status")).to_have_text(f"watching {address}",
                                                                     timeout=10_000)
            txid = await anyio.to_thread.run_sync(node.pay, address, 21_000)
            activity = page.locator("#activity li")
            mempool = activity.filter(has_text=f"{address}: mempool +0.00021000 BTC "
                                               f"({short(txid)})")
            await expect(mempool).to_have_count(1, timeout=20_000)
            await expect(mempool).to_have_attribute("title", txid)
            # A block mined on the bed (it confirms the payment) gets its row.
            [block_hash] = await anyio.to_thread.run_sync(node.mine)
            height = node.height
            row = page.locator(f'#blocks tr[data-height="{height}"]')
            await expect(row).to_have_count(1, timeout=20_000)
            hash_cell = row.locator("td").nth(1)
            await expect(hash_cell).to_have_text(short(block_hash))
            await expect(hash_cell).to_have_attribute("title", block_hash)
            await expect(row.locator("td").first).to_have_text(str(height))
            await expect(row.locator("td").nth(2)).not_to_be_empty()
            # ... and the payment's confirmation follows it into the activity panel.
            confirmed = activity.filter(has_text=f"{address}: confirmed +0.00021000 BTC "
                                                 f"({short(txid)}, 1 conf)")
            await expect(confirmed).to_have_count(1, timeout=20_000)
            await expect(page.locator("#blocks tr").first).to_have_attribute(
                "data-height", str(height))
            await page.screenshot(path=str(tmp_path / "dashboard-live.png"), full_page=True)
        finally:
            await browser.close()


@pytest.mark.skipif(not NGINX.exists(), reason="Debian's nginx-light is not installed "
                    "(/usr/sbin/nginx); scripts/test installs it when run as root")
def test_the_dashboard_recreates_its_stream_when_a_proxy_502_closed_it(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    tmp_path: Path,
) -> None:
    """Behind nginx without the README's 444 trick, a Chainwire restart makes nginx answer
    502 and the browser closes the EventSource for good; the page makes a new one from its
    last id, so it shows what happened while Chainwire was down and what comes after."""
    wait_for_tip()
    node = regtest_node
    env = regtest_env(electrumx_servers, tmp_path / "chainwire.db")
    with ChainwireProcess(env, cwd=tmp_path) as server, \
            NginxProcess(server.port, tmp_path, drop=RETRY_LATER) as nginx, \
            sync_playwright() as pw:
        wait_for_block(server.url, node.height)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{nginx.url}/")
            connection = page.locator("#connection")
            sync_expect(connection).to_have_text("live", timeout=10_000)
            node.mine()
            sync_expect(page.locator(f'#blocks tr[data-height="{node.height}"]')
                        ).to_have_count(1, timeout=20_000)

            assert server.stop(signal.SIGTERM) == 0
            # nginx's 502 closed the browser's EventSource; the page says so and waits.
            sync_expect(connection).to_have_attribute("data-state", "down", timeout=20_000)
            sync_expect(connection).to_contain_text("disconnected, retrying in")
            last_seq = int(page.locator("#last-seq").inner_text())  # no stream: it stays
            assert ("GET /events HTTP/1.1", 502) in nginx.requests()
            [missed_hash] = node.mine()  # while Chainwire is down
            missed = node.height
            # The page's own retry (not the browser's) reaches nginx while Chainwire is down:
            # wait for one to be answered 502 rather than hope the back-off lines up.
            retried = (f"GET /events?last_event_id={last_seq} HTTP/1.1", 502)
            deadline = time.monotonic() + 40
            while retried not in nginx.requests():
                assert time.monotonic() < deadline, "the page never retried its stream"
                time.sleep(0.1)

            with ChainwireProcess(env, cwd=tmp_path, port=server.port):
                sync_expect(connection).to_have_text("live", timeout=40_000)
                row = page.locator(f'#blocks tr[data-height="{missed}"]')
                sync_expect(row).to_have_count(1, timeout=20_000)
                sync_expect(row.locator("td").nth(1)).to_have_attribute("title", missed_hash)
                node.mine()
                sync_expect(page.locator(f'#blocks tr[data-height="{node.height}"]')
                            ).to_have_count(1, timeout=20_000)
                page.screenshot(path=str(tmp_path / "dashboard-restarted.png"))
        finally:
            browser.close()
    # The new stream resumed from the page's last id (the 502s in between too).
    resumed = [status for line, status in nginx.requests()
               if line == f"GET /events?last_event_id={last_seq} HTTP/1.1"]
    assert 502 in resumed and 200 in resumed
