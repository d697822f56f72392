"""Hostile input against every endpoint of the real server, over raw sockets: every answer
is a 4xx with the JSON error shape (never a 500, never plain text), and nothing is logged
as an error.

The requests are written byte for byte (no client library to tidy them up). Invalid UTF-8
and NUL are sent percent-encoded, as they reach an application; raw bytes outside ASCII in
the request line are refused by uvicorn's HTTP parser before the application sees them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.bed.electrumx import ElectrumXServer
from tests.stream.live import Live, live_server

pytestmark = pytest.mark.anyio

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
HUGE = "9" * 5000  # over CPython's 4300-digit int() limit

#: Values no integer parameter may take.
BAD_INTS = [
    HUGE, "0" * 4999 + "1" + "0" * 19, "9223372036854775808", "18446744073709551616",
    "-1", "1.5", "1e3", "+5", "0x10", "1_0", "%201", "%D9%A1%D9%A2",  # Arabic-Indic digits
    "%EF%BC%91",  # fullwidth 1
    "%FF%FE", "%00", "1%00", "%C3%A9", "abc",
]
#: Values no address (path or ``address=``) may take.
BAD_ADDRESSES = ["%FF", "%00", HUGE, "a" * 10_000, "%C3%A9", "bcrt1%00", "%ED%A0%80",
                 "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"]  # mainnet, not regtest
BAD_TYPES = ["nope", "%FF", "%00", HUGE, "block%00"]
#: Values no ``Last-Event-ID`` header may take (latin-1 text: what a header can carry).
BAD_HEADER_INTS = [HUGE, "0" * 4999 + "1" + "0" * 19, "9223372036854775808", "-1", "1.5",
                   "1e3", "+5", "0x10", "1_0", "abc", "\xff\xfe", "\xd9\xa1", "1 2"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


async def raw_request(live: Live, method: str, target: str, *,
                      headers: dict[str, str] | None = None, body: bytes = b"") -> Answer:
    """One HTTP/1.1 request exactly as given; reads the whole answer (``Connection: close``)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{live.port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines = [line for line in lines if not line.lower().startswith(f"{name.lower()}:")]
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    data = b""
    async with await anyio.connect_tcp("127.0.0.1", live.port) as stream:
        await stream.send(head + body)
        # A stream (a request that was wrongly accepted) never ends: what came is judged.
        with anyio.move_on_after(5):
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    if not data:
        return Answer(0, {}, b"(no answer)")
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), answer_headers, rest)


def problem(what: str, answer: Answer) -> str | None:
    """Why ``answer`` is not a typed 4xx (None when it is)."""
    if not 400 <= answer.status < 500:
        return f"{what}: status {answer.status}: {answer.body[:200]!r}"
    if answer.headers.get("content-type") != "application/json":
        return f"{what}: content-type {answer.headers.get('content-type')}: {answer.body[:200]!r}"
    try:
        error = orjson.loads(answer.body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"{what}: not the error shape: {answer.body[:200]!r}"
    if not (isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
        return f"{what}: not the error shape: {answer.body[:200]!r}"
    return None


def hostile_requests() -> list[tuple[str, str, dict[str, str], bytes]]:
    """(method, target, headers, body) for every endpoint and every input it reads."""
    cases: list[tuple[str, str, dict[str, str], bytes]] = []
    int_params = {"/events": ["min_sats", "last_event_id"],
                  "/api/v1/blocks/recent": ["limit"],
                  "/api/v1/transactions/large": ["min_sats", "limit"],
                  f"/api/v1/address/{ADDRESS}/events": ["limit"],
                  "/api/v1/batches": ["after", "limit"]}
    for path, names in int_params.items():
        for name in names:
            cases += [("GET", f"{path}?{name}={value}", {}, b"") for value in BAD_INTS]
            # Given twice: refused, whichever of the two is the good one.
            cases += [("GET", f"{path}?{name}=1&{name}=x", {}, b""),
                      ("GET", f"{path}?{name}=x&{name}=1", {}, b""),
                      ("GET", f"{path}?{name}=1&{name}=1", {}, b"")]
    cases += [("GET", "/events", {"Last-Event-ID": value}, b"") for value in BAD_HEADER_INTS]
    for value in BAD_ADDRESSES:
        cases += [("GET", f"/api/v1/address/{value}/events", {}, b""),
                  ("GET", f"/api/v1/address/{value}/balance", {}, b""),
                  ("DELETE", f"/api/v1/watch/{value}", {}, b""),
                  ("GET", f"/events?address={value}", {}, b""),
                  ("GET", f"/events?address={ADDRESS}&address={value}", {}, b"")]
    cases += [("GET", f"/events?types={value}", {}, b"") for value in BAD_TYPES]
    cases += [("POST", "/api/v1/watch", {"Content-Type": "application/json"}, body)
              for body in hostile_bodies()]
    cases += [("POST", "/api/v1/watch", {"Content-Type": ct}, b'{"addresses": []}')
              for ct in ("text/plain", "application/jsonp", "",
                         "application/x-www-form-urlencoded")]
    cases += [("GET", "/api/v1/watch", {"Host": host}, b"")
              for host in ("evil.example", "127.0.0.1:99999", "[::1", "a:b:c", "\xff", "")]
    cases += [("GET", "/api/v1/watch", {"Origin": origin}, b"")
              for origin in ("null", "http://evil.example", "\xff", "http://127.0.0.1:1")]
    cases += [("GET", path, {}, b"") for path in ("/nope", "/api/v1/%FF", "/api/v1/watch/",
                                                  "/static/%00", "/static/../pyproject.toml",
                                                  "/static/%2e%2e/pyproject.toml")]
    cases += [(method, "/api/v1/stats", {}, b"") for method in ("PUT", "PATCH", "DELETE")]
    return cases


def hostile_bodies() -> list[bytes]:
    return [b"", b"\xff\xfe", b"\x00", b"[" * 5000, b"{" * 5000, b'{"addresses": [1e400]}',
            b'{"addresses": [' + HUGE.encode() + b"]}", b'{"addresses": ["\\u0000"]}',
            b'{"addresses": ["\\ud800"]}', b'{"addresses": "' + ADDRESS.encode() + b'"}',
            b'{"addresses": [null]}', b"[]", b"null", b"1" * 5000, b'"x"',
            b'{"addresses": ["' + ADDRESS.encode() + b'", 1]}',
            b'{"addresses": ["' + ADDRESS.encode() + b'\\u0000"]}',
            b'{"addresses": []}' + b" " * (1024 * 1024 + 1)]  # over the body limit


async def test_every_hostile_request_gets_a_typed_4xx_and_nothing_is_logged_as_an_error(
    electrumx_servers: list[ElectrumXServer], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    cases = hostile_requests()
    problems = []
    async with live_server(electrumx_servers) as live:
        for method, target, headers, body in cases:
            answer = await raw_request(live, method, target, headers=headers, body=body)
            found = problem(f"{method} {target[:80]} {headers} {body[:40]!r}", answer)
            if found:
                problems.append(found)
        assert await live.services.watched() == []  # nothing hostile was watched
        # The inputs above that are merely odd, not wrong, keep their defaults.
        empty = await raw_request(live, "GET", "/api/v1/batches?after=&limit=")
        assert empty.status == 200
        # 5001 characters, but the number 1: fine (int() alone would have refused it).
        zeros = await raw_request(live, "GET", f"/api/v1/batches?after={'0' * 5000}1")
        assert zeros.status == 200
    assert len(cases) > 250
    assert not problems, f"{len(problems)} of {len(cases)}:\n" + "\n".join(problems)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


#: WS messages each of which must get ``{"op": "error"}`` and leave the connection up.
BAD_WS_MESSAGES: list[str | bytes] = [
    '{"op": "subscribe", "resume_from": 18446744073709551615}',
    '{"op": "subscribe", "resume_from": 9223372036854775808}',
    '{"op": "subscribe", "resume_from": 18446744073709551616}',
    '{"op": "subscribe", "resume_from": ' + HUGE + "}",
    '{"op": "subscribe", "resume_from": -1}',
    '{"op": "subscribe", "resume_from": 1e400}',
    '{"op": "subscribe", "resume_from": "5"}',
    '{"op": "subscribe", "min_sats": 18446744073709551615}',
    '{"op": "subscribe", "min_sats": ' + HUGE + "}",
    '{"op": "subscribe", "min_sats": 1.5}',
    '{"op": "subscribe", "addresses": ["\\u0000"]}',
    '{"op": "subscribe", "addresses": ["\\ud800"]}',
    '{"op": "subscribe", "addresses": ["' + "a" * 10_000 + '"]}',
    '{"op": "subscribe", "types": ["block\\u0000"]}',
    '{"op": "subscribe", "epoch": 1e400}',
    '{"op": "\\u0000"}',
    "[" * 5000,
    "",
    "\x00",
    b"\xff\xfe",
    b"",
]


async def test_every_hostile_ws_message_gets_a_typed_error_and_the_connection_stays(
    electrumx_servers: list[ElectrumXServer], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    async with live_server(electrumx_servers) as live, connect(live.ws) as client:
        assert orjson.loads(await client.recv())["op"] == "hello"
        for message in BAD_WS_MESSAGES:
            await client.send(message)
            answer = await next_message(client)
            assert answer["op"] == "error", (message[:60], answer)
            assert isinstance(answer["code"], str) and answer["message"]
        await client.send('{"op": "ping"}')
        assert (await next_message(client))["op"] == "pong"
        # The largest seq a store holds is still a valid place to resume from.
        await client.send('{"op": "subscribe", "resume_from": 9223372036854775807}')
        assert (await next_message(client))["op"] == "subscribed"
        assert await live.services.watched() == []
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def next_message(client: ClientConnection) -> dict[str, object]:
    with anyio.fail_after(5):
        message: dict[str, object] = orjson.loads(await client.recv())
        return message


async def test_a_bug_is_a_typed_500_that_tells_the_client_nothing(
    electrumx_servers: list[ElectrumXServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last line of defence: an exception no handler expected (injected here) is still
    the JSON error shape, without the exception's text."""
    def broken() -> dict[str, object]:
        raise RuntimeError("secret internals")

    async with live_server(electrumx_servers) as live:
        monkeypatch.setattr(live.services, "stats", broken)
        answer = await raw_request(live, "GET", "/api/v1/stats")
    assert answer.status == 500
    assert answer.headers["content-type"] == "application/json"
    assert orjson.loads(answer.body) == {
        "error": {"code": "internal", "message": "internal server error"}}
