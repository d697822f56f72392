"""The caps' rules without sockets: admission, the replay gate, the byte bound, and
every stream limit being a setting."""

from __future__ import annotations

import dataclasses
import time

import anyio
import pytest

from batcher.events import Batch, Event
from stream.fanout.filters import ClientFilter
from stream.fanout.hub import DisconnectReason, Hub
from stream.fanout.replays import ReplayGate
from stream.services import Limits
from stream.settings import ConfigError, Settings, load_settings
from stream.transports.admission import Admission, Refusal, Ticket, refusal_response


def test_the_per_ip_cap_comes_first_then_the_global_one() -> None:
    admission = Admission(max_per_ip=2, max_total=3)
    tickets = [admission.admit("a"), admission.admit("a")]
    assert admission.admit("a") is Refusal.PER_IP
    tickets.append(admission.admit("b"))
    assert admission.admit("c") is Refusal.FULL
    assert admission.admit("a") is Refusal.PER_IP  # its own cap names the real problem
    assert admission.by_ip == {"a": 2, "b": 1}  # refused IPs leave no entry
    assert admission.refused == {"too_many_connections": 2, "server_full": 1}
    assert all(isinstance(t, Ticket) for t in tickets)


def test_a_ticket_is_released_exactly_once() -> None:
    admission = Admission(max_per_ip=1, max_total=10)
    first = admission.admit("a")
    assert isinstance(first, Ticket)
    other = admission.admit("b")
    first.release()
    first.release()  # a second release must not free someone else's slot
    assert admission.by_ip == {"b": 1} and admission.total == 1
    again = admission.admit("a")
    assert isinstance(again, Ticket)
    assert admission.admit("a") is Refusal.PER_IP
    assert isinstance(other, Ticket)


def test_stats_show_the_busiest_ips() -> None:
    admission = Admission(max_per_ip=10, max_total=100)
    for ip, n in [("a", 1), ("b", 5), ("c", 3)]:
        for _ in range(n):
            admission.admit(ip)
    stats = admission.stats(top=2)
    assert stats["total"] == 9 and stats["client_ips"] == 3
    assert stats["top_ips"] == [{"ip": "b", "connections": 5}, {"ip": "c", "connections": 3}]


def test_refusals_are_typed_429_and_503() -> None:
    admission = Admission(max_per_ip=1, max_total=1)
    per_ip = refusal_response(admission, Refusal.PER_IP)
    full = refusal_response(admission, Refusal.FULL)
    assert (per_ip.status_code, full.status_code) == (429, 503)
    assert b'"code":"too_many_connections"' in per_ip.body
    assert b'"code":"server_full"' in full.body
    assert per_ip.headers["retry-after"] == "5"


@pytest.mark.parametrize("kwargs", [{"max_per_ip": 0, "max_total": 1},
                                    {"max_per_ip": 1, "max_total": 0}])
def test_admission_limits_are_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        Admission(**kwargs)


@pytest.mark.anyio
async def test_the_replay_gate_lets_n_in_and_the_rest_wait_in_order() -> None:
    gate = ReplayGate(2)
    order: list[int] = []
    release = anyio.Event()

    async def replay(n: int) -> None:
        async with gate:
            order.append(n)
            await release.wait()

    async with anyio.create_task_group() as tg:
        for n in range(5):  # they arrive in this order
            tg.start_soon(replay, n)
            with anyio.fail_after(5):
                while gate.active + gate.waiting < n + 1:
                    await anyio.sleep(0.001)
        assert (gate.active, gate.waiting, order) == (2, 3, [0, 1])
        release.set()
    assert order == [0, 1, 2, 3, 4]
    assert gate.stats() == {"max": 2, "active": 0, "waiting": 0, "peak": 2, "pages": 5}


@pytest.mark.anyio
async def test_a_replay_that_gives_up_waiting_leaves_the_queue() -> None:
    gate = ReplayGate(1)
    async with gate:
        with anyio.move_on_after(0.05):
            async with gate:
                pytest.fail("the gate let a second replay in")
        assert (gate.active, gate.waiting) == (1, 0)
    async with gate:
        assert gate.active == 1


def _batch(seq: int, size: int) -> Batch:
    event = Event("block", str(seq), {"height": seq, "pad": "x" * size}, ts=time.time())
    return Batch(seq=seq, epoch="e", type="block", events=(event,), ts=time.time())


def test_a_subscriber_is_cut_at_its_byte_bound_before_its_batch_bound() -> None:
    hub = Hub(buffer_size=1000, buffer_bytes=10_000)
    subscriber = hub.subscribe("ws", ClientFilter.build(None, None, 0))
    for seq in range(1, 4):
        hub.publish(_batch(seq, 3_000))
    assert not subscriber.cut  # ~9 KB buffered
    hub.publish(_batch(4, 3_000))
    assert subscriber.reason is DisconnectReason.SLOW_CLIENT


@pytest.mark.anyio
async def test_receiving_frees_the_byte_budget_and_one_big_batch_still_fits() -> None:
    hub = Hub(buffer_size=1000, buffer_bytes=10_000)
    subscriber = hub.subscribe("ws", ClientFilter.build(None, None, 0))
    hub.publish(_batch(1, 50_000))  # over the bound alone: an empty buffer takes it
    assert not subscriber.cut
    assert [m.seq for m in await subscriber.receive()] == [1]
    for seq in range(2, 20):  # 18 x 3 KB, read as they come: never over the bound
        hub.publish(_batch(seq, 3_000))
        assert [m.seq for m in await subscriber.receive()] == [seq]
    hub.publish(_batch(20, 3_000))
    hub.publish(_batch(21, 3_000))
    assert [m.seq for m in await subscriber.receive(1)] == [20]  # a partial read frees it too
    for seq in range(22, 24):
        hub.publish(_batch(seq, 3_000))
    assert not subscriber.cut


def test_every_limit_is_a_setting_and_settings_build_the_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fields = [f.name for f in dataclasses.fields(Limits)]
    assert set(fields) <= set(Settings.model_fields)
    defaults = Settings(network="mainnet")
    assert Limits.from_settings(defaults) == Limits()  # the same defaults in both places
    values = {"CLIENT_BUFFER": "7", "CLIENT_BUFFER_BYTES": "70000", "WS_MAX_ADDRESSES": "3",
              "WS_MAX_MESSAGE_BYTES": "4096", "MAX_CONNECTIONS_PER_IP": "5",
              "MAX_CONNECTIONS": "50", "MAX_REPLAYS": "2", "WS_MAX_ERRORS": "4",
              "WS_SEND_TIMEOUT": "2.5", "SSE_PING_SECONDS": "1.5", "SSE_RETRY_MS": "900",
              "SSE_SEND_TIMEOUT": "3.5", "SSE_MAX_ADDRESSES": "6"}
    assert {name.lower() for name in values} == set(fields)
    for name, value in values.items():
        monkeypatch.setenv(f"CHAINWIRE_{name}", value)
    limits = Limits.from_settings(load_settings(env_file=None))
    assert limits == Limits(client_buffer=7, client_buffer_bytes=70000, ws_max_addresses=3,
                            ws_max_message_bytes=4096, max_connections_per_ip=5,
                            max_connections=50, max_replays=2, ws_max_errors=4,
                            ws_send_timeout=2.5, sse_ping_seconds=1.5, sse_retry_ms=900,
                            sse_send_timeout=3.5, sse_max_addresses=6)
    assert "max_replays=2" in limits.describe()


@pytest.mark.parametrize(("name", "value", "line"), [
    ("MAX_CONNECTIONS", "0", 'CHAINWIRE_MAX_CONNECTIONS must be a positive integer, got "0"'),
    ("WS_SEND_TIMEOUT", "-1",
     'CHAINWIRE_WS_SEND_TIMEOUT must be a positive number (seconds), got "-1"'),
    ("TRUSTED_PROXIES", "10.0.0.0/8,10.1.2.3/8",
     "CHAINWIRE_TRUSTED_PROXIES must be a comma-separated list of IP addresses or CIDRs, "
     'got "10.1.2.3/8"'),
    ("TRUSTED_PROXIES", "proxy.local",
     "CHAINWIRE_TRUSTED_PROXIES must be a comma-separated list of IP addresses or CIDRs, "
     'got "proxy.local"'),
])
def test_a_bad_limit_or_proxy_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, line: str,
) -> None:
    monkeypatch.setenv(f"CHAINWIRE_{name}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    assert caught.value.problems == [line]


def test_trusted_proxies_take_ips_and_cidrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINWIRE_TRUSTED_PROXIES", raising=False)
    assert load_settings(env_file=None).trusted_proxies == ()  # nobody by default
    monkeypatch.setenv("CHAINWIRE_TRUSTED_PROXIES", " 10.0.0.0/8, 127.0.0.1,::1 ,")
    assert load_settings(env_file=None).trusted_proxies == ("10.0.0.0/8", "127.0.0.1", "::1")
