"""Chainwire behind real nginx, configured by the README's ``deploy/nginx.conf``.

A real ``chainwire serve`` following the bed, Debian's nginx in front of it, real clients:
SSE arrives unbuffered, WebSocket upgrades, and a browser's EventSource lives through a
Chainwire restart and resumes from its Last-Event-ID.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Page, sync_playwright
from websockets.sync.client import connect

from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.nginx_process import (
    NGINX,
    NGINX_CONF,
    RETRY_LATER,
    NginxProcess,
    block_batches,
    regtest_env,
    wait_for_block,
)
from tests.server_process import REPO, ChainwireProcess
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS

needs_nginx = pytest.mark.skipif(
    not NGINX.exists(), reason="Debian's nginx-light is not installed (/usr/sbin/nginx); "
    "scripts/test installs it when run as root")
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/test "
    "installs it when run as root)")


def test_the_readme_shows_deploy_nginx_conf_verbatim() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Behind nginx"):]
    [block] = re.findall(r"```nginx\n(.*?)```", section, re.DOTALL)[:1]
    assert block == NGINX_CONF.read_text()


def sse_messages(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The messages of an SSE response (comments skipped), as they arrive."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


@contextmanager
def serve_following_the_bed(servers: list[ElectrumXServer], node: RegtestNode,
                            tmp_path: Path) -> Iterator[ChainwireProcess]:
    """``chainwire serve`` with its first tip's ``block`` event stored, so the next block
    event is one the test mines."""
    with ChainwireProcess(regtest_env(servers, tmp_path / "chainwire.db"),
                          cwd=tmp_path) as server:
        wait_for_block(server.url, node.height)
        yield server


@needs_nginx
def test_sse_through_nginx_arrives_unbuffered_and_errors_stay_typed(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    tmp_path: Path,
) -> None:
    wait_for_tip()
    with serve_following_the_bed(electrumx_servers, regtest_node, tmp_path) as server, \
            NginxProcess(server.port, tmp_path) as nginx, httpx.Client(timeout=10) as http:
        with http.stream("GET", f"{nginx.url}/events?types=block") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            messages = sse_messages(response)
            assert next(messages)["event"] == "start"
            # A batch of a few hundred bytes: a buffering proxy would hold it until its
            # buffer filled or the stream ended (a read timeout here, after 10 s).
            mined = time.monotonic()
            [block_hash] = regtest_node.mine()
            message = next(messages)
            took = time.monotonic() - mined
        assert message["event"] == "block"
        assert orjson.loads(message["data"])["events"][0]["data"]["hash"] == block_hash
        assert took < 5, f"the block took {took:.1f} s through nginx"
        # Chainwire's own typed errors pass through: only 502-504 become a closed connection.
        bad = http.get(f"{nginx.url}/events", params={"min_sats": "abc"})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "bad_request"


@needs_nginx
def test_websocket_upgrades_through_nginx(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    tmp_path: Path,
) -> None:
    wait_for_tip()
    with serve_following_the_bed(electrumx_servers, regtest_node, tmp_path) as server, \
            NginxProcess(server.port, tmp_path) as nginx, \
            connect(f"ws://127.0.0.1:{nginx.port}/ws", open_timeout=10) as bot:
        hello = json.loads(bot.recv(timeout=10))
        assert hello["op"] == "hello" and hello["network"] == "regtest"
        bot.send(json.dumps({"op": "subscribe", "types": ["block"]}))
        assert json.loads(bot.recv(timeout=10))["op"] == "subscribed"
        [block_hash] = regtest_node.mine()
        message = json.loads(bot.recv(timeout=10))
        assert message["op"] == "batch" and message["type"] == "block"
        assert message["events"][0]["data"]["hash"] == block_hash
        bot.close()
        deadline = time.monotonic() + 5  # logged once nginx has closed both sides
        while ("GET /ws HTTP/1.1", 101) not in nginx.requests():
            assert time.monotonic() < deadline, nginx.requests()
            time.sleep(0.05)


# What the page's EventSource sees; `everClosed` is set if it ever reaches CLOSED (2),
# which by the spec it never leaves.
PROBE = """() => {
  window.log = [];
  window.everClosed = false;
  window.errors = 0;
  const source = new EventSource("/events?types=block");
  source.addEventListener("start", (m) =>
    log.push({kind: "start", id: m.lastEventId, data: JSON.parse(m.data)}));
  source.addEventListener("block", (m) => {
    const batch = JSON.parse(m.data);
    log.push({kind: "block", id: m.lastEventId, seq: batch.seq,
              heights: batch.events.map((e) => e.data.height)});
  });
  source.onerror = () => { errors += 1; if (source.readyState === 2) everClosed = true; };
  setInterval(() => { if (source.readyState === 2) everClosed = true; }, 20);
  window.source = source;
}"""


def page_log(page: Page, kind: str) -> list[dict[str, Any]]:
    return [entry for entry in page.evaluate("log") if entry["kind"] == kind]


def wait_until_page(page: Page, what: str, predicate: str, seconds: float = 30) -> None:
    try:
        page.wait_for_function(predicate, timeout=seconds * 1000, polling=50)
    except Exception as exc:
        raise AssertionError(f"{what}; log: {page.evaluate('log')}") from exc


@needs_nginx
@needs_chromium
def test_a_browser_eventsource_through_nginx_lives_through_a_chainwire_restart(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    tmp_path: Path,
) -> None:
    wait_for_tip()
    node = regtest_node
    with serve_following_the_bed(electrumx_servers, regtest_node, tmp_path) as server, \
            NginxProcess(server.port, tmp_path) as nginx, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Chainwire's CSP forbids eval, which Playwright's string predicates use: the
            # probe is the test's own instrumentation, not the page's code.
            page = browser.new_page(bypass_csp=True)
            page.goto(f"{nginx.url}/healthz")  # any page of nginx's origin
            page.evaluate(PROBE)
            wait_until_page(page, "no start message", "log.length >= 1")
            first_start = int(page_log(page, "start")[0]["id"])
            node.mine()
            before = node.height
            wait_until_page(page, "no block before the restart",
                            f"log.some((e) => e.heights && e.heights.includes({before}))")
            last_seen = page_log(page, "block")[-1]["seq"]

            assert server.stop(signal.SIGTERM) == 0
            # While Chainwire is down the browser tries again, and nginx closes each such
            # connection without an answer (444): a network error, so EventSource retries.
            deadline = time.monotonic() + 20
            while ("GET /events?types=block HTTP/1.1", 444) not in nginx.requests():
                assert time.monotonic() < deadline, nginx.requests()
                time.sleep(0.05)
            [missed_hash] = node.mine()  # while it is down: replayed after the restart
            missed = node.height
            assert page.evaluate("source.readyState") != 2
            assert page.evaluate("errors") >= 1

            with ChainwireProcess(server.env, cwd=tmp_path, port=server.port) as restarted:
                wait_until_page(page, "no block after the restart",
                                f"log.some((e) => e.heights && e.heights.includes({missed}))")
                node.mine()
                after = node.height
                wait_until_page(page, "no live block after the restart",
                                f"log.some((e) => e.heights && e.heights.includes({after}))")
                stored = block_batches(restarted.url, after=first_start)
            assert page.evaluate("everClosed") is False
            starts, blocks = page_log(page, "start"), page_log(page, "block")
        finally:
            browser.close()
    # It resumed from the last batch it had, by Last-Event-ID ...
    assert [int(s["id"]) for s in starts] == [first_start, last_seen]
    assert starts[1]["data"]["resume_from"] == last_seen
    # ... and got every stored block batch once, in order: no gap, no duplicate.
    assert [b["seq"] for b in blocks] == [b["seq"] for b in stored]
    assert [h for b in blocks for h in b["heights"]] == [before, missed, after]
    assert missed_hash in json.dumps(stored)


@needs_nginx
@needs_chromium
def test_without_the_444_a_chainwire_restart_closes_a_browser_eventsource_for_good(
    regtest_node: RegtestNode, electrumx_servers: list[ElectrumXServer], wait_for_tip: Any,
    tmp_path: Path,
) -> None:
    """The problem the README's `error_page` solves, shown: nginx's 502 ends the stream."""
    wait_for_tip()
    with serve_following_the_bed(electrumx_servers, regtest_node, tmp_path) as server, \
            NginxProcess(server.port, tmp_path, drop=RETRY_LATER) as nginx, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Chainwire's CSP forbids eval, which Playwright's string predicates use: the
            # probe is the test's own instrumentation, not the page's code.
            page = browser.new_page(bypass_csp=True)
            page.goto(f"{nginx.url}/healthz")
            page.evaluate(PROBE)
            wait_until_page(page, "no start message", "log.length >= 1")
            assert server.stop(signal.SIGTERM) == 0
            wait_until_page(page, "the EventSource did not close", "everClosed")
        finally:
            browser.close()
    assert ("GET /events?types=block HTTP/1.1", 502) in nginx.requests()
