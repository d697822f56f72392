"""Cross-site protection as a browser enforces it: pages served from other origins (small
local HTTP servers on other ports) in a real headless Chromium, against a real server."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from playwright.async_api import Page, async_playwright, expect

from batcher.events import Event
from tests.bed.electrumx import ElectrumXServer
from tests.server_process import free_port
from tests.stream.live import Live, live_server
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                       reason="Debian's chromium is not installed (scripts/test installs it "
                       "when run as root)"),
]

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title><p>another site</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def another_site() -> Iterator[str]:
    """A page on another origin (same host, another port); yields its origin."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# Run in the other site's page. Each probe resolves to what the page could see.
POST_JSON = """async ([url, address]) => {
  try {
    const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                body: JSON.stringify({addresses: [address]})});
    return {read: true, status: r.status, body: await r.json()};
  } catch (e) { return {read: false, error: String(e)}; }
}"""
# What needs no preflight: a "simple" text/plain POST, fired blind.
POST_TEXT_NO_CORS = """async ([url, address]) => {
  await fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                    body: JSON.stringify({addresses: [address]})});
  return "sent";
}"""
# A form with enctype text/plain, submitted into a hidden frame: the oldest CSRF.
POST_FORM = """([url, address]) => new Promise((resolve) => {
  const frame = document.createElement("iframe");
  frame.name = "sink";
  frame.onload = () => resolve("submitted");
  document.body.append(frame);
  const form = document.createElement("form");
  form.method = "POST"; form.action = url; form.enctype = "text/plain"; form.target = "sink";
  const input = document.createElement("input");
  input.name = '{"addresses": ["' + address + '"], "x": "'; input.value = '"}';
  form.append(input);
  document.body.append(form);
  form.submit();
})"""
READ_EVENTS = """(url) => new Promise((resolve) => {
  const source = new EventSource(url);
  source.addEventListener("block", (e) => { source.close(); resolve({read: true, data: e.data}); });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) resolve({read: false});
  };
  source.onopen = () => { window.eventsOpen = true; };
})"""
OPEN_WS = """(url) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.onmessage = (e) => { ws.close(); resolve({open: true, first: JSON.parse(e.data).op}); };
  ws.onclose = () => resolve({open: false});
})"""


async def probe_writes(page: Page, live: Live) -> dict[str, Any]:
    url = f"{live.http}/api/v1/watch"
    await page.evaluate(POST_TEXT_NO_CORS, [url, ADDRESS])
    await page.evaluate(POST_FORM, [url, ADDRESS])
    text_writes_watched = await live.services.watched()
    json_write: dict[str, Any] = await page.evaluate(POST_JSON, [url, ADDRESS])
    return {"text_writes_watched": text_writes_watched, "json_write": json_write}


async def test_a_page_on_another_origin_can_neither_write_nor_read_the_stream(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    with another_site() as origin:
        async with live_server(electrumx_servers) as live, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{origin}/")
                writes = await probe_writes(page, live)
                assert writes["text_writes_watched"] == []
                assert writes["json_write"]["read"] is False  # the preflight failed
                assert await live.services.watched() == []
                events = await page.evaluate(READ_EVENTS, f"{live.http}/events")
                assert events == {"read": False}
                ws = await page.evaluate(OPEN_WS, f"ws://127.0.0.1:{live.port}/ws")
                assert ws == {"open": False}
            finally:
                await browser.close()


async def test_a_page_on_an_allowed_origin_writes_and_reads_the_stream(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    with another_site() as origin:
        async with live_server(electrumx_servers, cors_origins=(origin,)) as live, \
                async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{origin}/")
                writes = await probe_writes(page, live)
                # Even an allowed origin cannot write blind: only JSON is a write.
                assert writes["text_writes_watched"] == []
                assert writes["json_write"]["read"] is True
                assert writes["json_write"]["status"] == 200
                assert writes["json_write"]["body"]["added"] == [ADDRESS]
                assert await live.services.watched() == [ADDRESS]
                reading = page.evaluate(READ_EVENTS, f"{live.http}/events?types=block")
                events = await _with_a_block(page, live, reading)
                assert events["read"] is True
                ws = await page.evaluate(OPEN_WS, f"ws://127.0.0.1:{live.port}/ws")
                assert ws == {"open": True, "first": "hello"}
            finally:
                await browser.close()


async def _with_a_block(page: Page, live: Live, reading: Any) -> dict[str, Any]:
    """Emit a block once the page's EventSource is open; what the page read."""
    async with anyio.create_task_group() as tg:
        result: dict[str, Any] = {}

        async def read() -> None:
            result.update(await reading)

        tg.start_soon(read)
        await page.wait_for_function("window.eventsOpen === true", timeout=10_000)
        await live.emit(Event("block", "900", {"height": 900, "hash": "ab" * 32},
                              ts=time.time()))
    return result


async def test_the_dashboard_runs_under_its_policy_and_refuses_to_be_framed(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    """No violation of the dashboard's own Content-Security-Policy while it streams and
    watches; a page on another origin that frames it gets nothing."""
    with another_site() as origin:
        async with live_server(electrumx_servers) as live, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.add_init_script("""window.cspViolations = [];
                  document.addEventListener("securitypolicyviolation",
                    (e) => window.cspViolations.push(e.violatedDirective + " " + e.blockedURI));""")
                await page.goto(f"{live.http}/")
                await expect(page.locator("#connection")).to_have_text("live", timeout=10_000)
                await page.fill("#watch-address", ADDRESS)
                await page.click("#watch-form button")
                await expect(page.locator("#watch-status")).to_have_text(f"watching {ADDRESS}")
                assert await page.evaluate("window.cspViolations") == []

                framing = await browser.new_page()
                fetched: list[str] = []
                framing.on("request", lambda request: fetched.append(request.url))
                await framing.goto(f"{origin}/")
                await framing.evaluate(FRAME, f"{live.http}/")
                assert f"{live.http}/" in fetched  # the frame asked for the dashboard...
                assert f"{live.http}/static/app.js" not in fetched  # ...and never ran it
            finally:
                await browser.close()


# "load" fires once the frame is done: with the dashboard rendered (its script loaded) or
# with the error page a refused frame gets.
FRAME = """(url) => new Promise((resolve) => {
  const frame = document.createElement("iframe");
  frame.onload = () => resolve("loaded");
  frame.src = url;
  document.body.append(frame);
})"""
