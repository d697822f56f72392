"""The npm ``eventsource`` package (Node's usual EventSource) against a real ``chainwire
serve``: it records the stream's start position even when its filter has matched nothing,
so after a restart it resumes from there (it drops messages without data, so an id-only
start message would leave it with no Last-Event-ID, and it would miss what came between).
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode
from tests.nginx_process import block_batches, regtest_env, wait_for_block
from tests.server_process import ChainwireProcess

NODE, NPM = shutil.which("node"), shutil.which("npm")

pytestmark = pytest.mark.skipif(NODE is None or NPM is None,
                                reason="node and npm are not installed")

# 2: the classic CommonJS client; 4: the current one that still runs on Node 20 (5 needs 22).
MAJORS = ["2", "4"]

CLIENT = """
const mod = await import("eventsource");
const EventSource = mod.EventSource ?? mod.default;  // 4: named export; 2: module.exports
const say = (what) => process.stdout.write(JSON.stringify(what) + "\\n");
const source = new EventSource(process.argv[2]);
source.addEventListener("start", (m) =>
  say({kind: "start", lastEventId: m.lastEventId, data: JSON.parse(m.data)}));
source.onerror = () => say({kind: "error"});
"""


@pytest.fixture(scope="session", params=MAJORS)
def eventsource_client(request: pytest.FixtureRequest,
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ``eventsource@MAJOR`` installed from the npm registry and
    ``client.mjs`` (prints each ``start`` message it gets as a JSON line)."""
    major: str = request.param
    where = tmp_path_factory.mktemp(f"eventsource{major}")
    assert NPM is not None
    try:
        installed = subprocess.run(
            [NPM, "install", "--no-audit", "--no-fund", "--silent", f"eventsource@{major}"],
            cwd=where, capture_output=True, text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install eventsource timed out (is the npm registry reachable?)")
    if installed.returncode != 0:
        pytest.skip(f"npm install eventsource@{major} failed: "
                    f"{installed.stderr.strip().splitlines()[-1:]}")
    (where / "client.mjs").write_text(CLIENT)
    return where


class NodeClient:
    """``client.mjs`` on a URL; its JSON lines are read by a thread into a queue."""

    def __init__(self, where: Path, url: str) -> None:
        assert NODE is not None
        self.proc = subprocess.Popen([NODE, str(where / "client.mjs"), url], cwd=where,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next_start(self, seconds: float = 30) -> dict[str, Any]:
        try:
            while (message := self.lines.get(timeout=seconds))["kind"] != "start":
                pass
        except queue.Empty:
            raise AssertionError(f"no start message; node said: {self.output}") from None
        return message

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.reader.join(5)  # it ends at the pipe's end of file
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def node_clients() -> Iterator[list[NodeClient]]:
    clients: list[NodeClient] = []
    yield clients
    for client in clients:
        client.close()


def test_npm_eventsource_resumes_from_the_start_position_after_a_restart(
    eventsource_client: Path, node_clients: list[NodeClient], regtest_node: RegtestNode,
    electrumx_servers: list[ElectrumXServer], wait_for_tip: Any, tmp_path: Path,
) -> None:
    wait_for_tip()
    node = regtest_node
    env = regtest_env(electrumx_servers, tmp_path / "chainwire.db")
    with ChainwireProcess(env, cwd=tmp_path) as server:
        wait_for_block(server.url, node.height)
        # A filter nothing matches: the start message is the only position it ever gets.
        client = NodeClient(eventsource_client, f"{server.url}/events?types=tx.large")
        node_clients.append(client)
        first = client.next_start()
        position = first["data"]["resume_from"]
        assert first["lastEventId"] == str(position)
        # Batches the client's filter drops are stored meanwhile: a client that lost its
        # position would come back at the newest seq, not at `position`.
        node.mine()
        wait_for_block(server.url, node.height)
        assert block_batches(server.url, after=position)
        assert server.stop(signal.SIGTERM) == 0
    with ChainwireProcess(env, cwd=tmp_path, port=server.port):
        again = client.next_start()
    # It reconnected by itself, sending Last-Event-ID: the position the server gave it.
    assert again["data"]["resume_from"] == position
    assert again["lastEventId"] == str(position)
    assert again["data"]["last_seq"] > position
