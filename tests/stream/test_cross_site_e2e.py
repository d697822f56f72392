"""Cross-site protection on the real server over real sockets: CORS for allowed origins,
``Origin`` on WebSocket handshakes, JSON-only writes, allowed hosts, security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.bed.electrumx import ElectrumXServer
from tests.server_process import ChainwireProcess
from tests.stream.live import Live, live_server

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
DASHBOARD = "http://dash.example:8080"
EVIL = "http://evil.example"


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message"}
    return error


async def ws_refusal(url: str, **options: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP answer to a WebSocket handshake the server refuses."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5, **options):
            pass
    response = refused.value.response
    return response.status_code, orjson.loads(response.body or b"{}")


async def ws_hello(url: str, **options: Any) -> dict[str, Any]:
    async with connect(url, open_timeout=5, **options) as client:
        hello: dict[str, Any] = orjson.loads(await client.recv())
        return hello


@pytest.mark.anyio
async def test_an_allowed_origin_reads_the_api_and_events_and_others_get_no_cors_headers(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, cors_origins=(DASHBOARD,)) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        allowed = await http.get("/api/v1/watch", headers={"Origin": DASHBOARD})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == DASHBOARD
        assert "access-control-allow-credentials" not in allowed.headers

        refused = await http.get("/api/v1/watch", headers={"Origin": EVIL})
        assert refused.status_code == 403
        assert error_of(refused)["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in refused.headers

        # The stream itself: an EventSource on the dashboard's origin may read it.
        async with http.stream("GET", "/events", headers={"Origin": DASHBOARD}) as stream:
            assert stream.status_code == 200
            assert stream.headers["access-control-allow-origin"] == DASHBOARD
            lines = []
            with anyio.fail_after(5):
                async for line in stream.aiter_lines():
                    if not line:
                        break  # the end of the first message: where the stream stands
                    lines.append(line)
            assert any(line.startswith("id: ") for line in lines)
        refused_stream = await http.get("/events", headers={"Origin": EVIL})
        assert refused_stream.status_code == 403
        assert "access-control-allow-origin" not in refused_stream.headers

        # An error for an allowed origin is labelled too, so the page can read why.
        bad = await http.get("/api/v1/batches?limit=x", headers={"Origin": DASHBOARD})
        assert bad.status_code == 400
        assert bad.headers["access-control-allow-origin"] == DASHBOARD


@pytest.mark.anyio
async def test_a_preflight_is_answered_for_allowed_origins_and_refused_typed_for_others(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, authorization"}
    async with live_server(electrumx_servers, cors_origins=(DASHBOARD,)) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        ok = await http.options("/api/v1/watch", headers={"Origin": DASHBOARD, **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == DASHBOARD
        assert "POST" in ok.headers["access-control-allow-methods"]
        allowed_headers = ok.headers["access-control-allow-headers"].lower()
        assert "content-type" in allowed_headers and "authorization" in allowed_headers

        refused = await http.options("/api/v1/watch", headers={"Origin": EVIL, **preflight})
        assert refused.status_code == 400
        assert error_of(refused)["code"] == "cors_refused"
        assert "access-control-allow-origin" not in refused.headers
        # The browser would not send the POST; one sent anyway is refused as well.
        post = await http.post("/api/v1/watch", json={"addresses": [ADDRESS]},
                               headers={"Origin": EVIL})
        assert post.status_code == 403
        assert await live.services.watched() == []


@pytest.mark.anyio
async def test_with_no_origins_configured_only_the_servers_own_origin_may_write(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        foreign = await http.post("/api/v1/watch", json={"addresses": [ADDRESS]},
                                  headers={"Origin": f"http://127.0.0.1:{live.port + 1}"})
        assert foreign.status_code == 403
        assert error_of(foreign)["code"] == "origin_not_allowed"
        assert await live.services.watched() == []
        own = await http.post("/api/v1/watch", json={"addresses": [ADDRESS]},
                              headers={"Origin": live.http})
        assert own.status_code == 200
        assert await live.services.watched() == [ADDRESS]


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/jsonx", None,
])
@pytest.mark.anyio
async def test_a_write_that_is_not_json_is_refused_and_changes_nothing(
    electrumx_servers: list[ElectrumXServer], content_type: str | None,
) -> None:
    """What a cross-origin form or ``fetch(..., {mode: "no-cors"})`` can send without a
    preflight: a JSON body under another content type."""
    body = orjson.dumps({"addresses": [ADDRESS]})
    headers = {"Content-Type": content_type} if content_type else {}
    async with live_server(electrumx_servers) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        response = await http.post("/api/v1/watch", content=body, headers=headers)
        assert ("content-type" in response.request.headers) == (content_type is not None)
        assert response.status_code == 415
        assert error_of(response)["code"] == "unsupported_media_type"
        assert await live.services.watched() == []
        # The same body as JSON (parameters allowed) is a write.
        ok = await http.post("/api/v1/watch", content=body,
                             headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 200
        assert await live.services.watched() == [ADDRESS]


@pytest.mark.anyio
async def test_ws_handshakes_from_a_disallowed_origin_are_refused_before_accept(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, cors_origins=(DASHBOARD,)) as live:
        status, body = await ws_refusal(live.ws, origin=EVIL)
        assert status == 403
        assert body["error"]["code"] == "origin_not_allowed"
        status, body = await ws_refusal(live.ws, origin="null")
        assert status == 403
        # Allowed: a listed origin, the server's own, and a client that sends none (a bot).
        for origin in (DASHBOARD, live.http, None):
            hello = await ws_hello(live.ws, origin=origin)
            assert hello["op"] == "hello"


@pytest.mark.anyio
async def test_a_foreign_host_is_refused_on_loopback_but_healthz_still_answers(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        for path in ("/", "/api/v1/watch", "/events", "/static/app.js"):
            rebound = await http.get(path, headers={"Host": f"evil.example:{live.port}"})
            assert rebound.status_code == 400, path
            assert error_of(rebound)["code"] == "bad_host"
        # Connect to loopback while the handshake names another host (what a rebound
        # name does).
        status, body = await ws_refusal(f"ws://evil.example:{live.port}/ws",
                                        host="127.0.0.1", port=live.port)
        assert (status, body["error"]["code"]) == (400, "bad_host")
        for host in (f"localhost:{live.port}", f"127.0.0.1:{live.port}", f"[::1]:{live.port}",
                     f"dash.localhost:{live.port}"):
            assert (await http.get("/api/v1/watch", headers={"Host": host})).status_code == 200
        # Load balancers probe by IP or by a name of their own.
        health = await http.get("/healthz", headers={"Host": "10.1.2.3"})
        assert health.json()["status"] in ("ok", "unhealthy")


@pytest.mark.anyio
async def test_configured_hosts_replace_the_loopback_names(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers,
                           allowed_hosts=("chainwire.example", "*.chainwire.example")) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        for host, status in (("chainwire.example", 200), ("eu.chainwire.example", 200),
                             ("localhost", 400), ("chainwire.example.evil", 400)):
            response = await http.get("/api/v1/watch", headers={"Host": host})
            assert response.status_code == status, host


@pytest.mark.anyio
async def test_bound_elsewhere_any_host_is_served_and_no_redirect_echoes_it(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, host="0.0.0.0") as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        headers = {"Host": "evil.example"}
        assert (await http.get("/api/v1/watch", headers=headers)).status_code == 200
        for path in ("/api/v1/watch/", "/static", "/events/"):
            response = await http.get(path, headers=headers)
            assert response.status_code == 404, path
            assert "location" not in response.headers
            assert error_of(response)["code"] == "not_found"


@pytest.mark.anyio
async def test_every_answer_has_the_security_headers_and_no_server_header(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    async with live_server(electrumx_servers, cors_origins=(DASHBOARD,)) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        for path in ("/", "/static/app.js", "/static/style.css", "/api/v1/watch",
                     "/api/v1/nope"):
            response = await http.get(path)
            headers = response.headers
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert f"connect-src 'self' {DASHBOARD}" in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
            assert "server" not in headers, path
        await _stream_has_headers(live)


async def _stream_has_headers(live: Live) -> None:
    async with httpx.AsyncClient(timeout=10) as http, \
            http.stream("GET", f"{live.http}/events") as stream:
        assert stream.headers["x-content-type-options"] == "nosniff"
        assert "server" not in stream.headers


@pytest.mark.anyio
async def test_with_api_keys_a_preflight_needs_no_key_and_a_401_is_readable(
    electrumx_servers: list[ElectrumXServer],
) -> None:
    """A browser never sends credentials on a preflight: it must be answered before the key
    check, and the key check's 401 must carry CORS headers so the page can say why."""
    async with live_server(electrumx_servers, cors_origins=(DASHBOARD,),
                           api_keys=("sekrit",)) as live, \
            httpx.AsyncClient(base_url=live.http, timeout=10) as http:
        preflight = await http.options("/api/v1/watch", headers={
            "Origin": DASHBOARD, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200
        no_key = await http.get("/api/v1/watch", headers={"Origin": DASHBOARD})
        assert no_key.status_code == 401
        assert no_key.headers["access-control-allow-origin"] == DASHBOARD
        with_key = await http.get("/api/v1/watch", headers={
            "Origin": DASHBOARD, "Authorization": "Bearer sekrit"})
        assert with_key.status_code == 200


def test_chainwire_serve_sends_no_server_header_and_logs_what_it_enforces(
    electrumx_servers: list[ElectrumXServer], tmp_path: Path,
) -> None:
    env = {"CHAINWIRE_NETWORK": "regtest", "CHAINWIRE_SERVERS": electrumx_servers[0].tcp_url,
           "CHAINWIRE_DATABASE_URL": f"sqlite:///{tmp_path / 'cw.db'}",
           "CHAINWIRE_CORS_ORIGINS": "https://Dash.example:443"}
    with ChainwireProcess(env, cwd=tmp_path) as process:
        for path in ("/", "/static/app.js", "/api/v1/nope"):
            response = httpx.get(f"{process.url}{path}", timeout=10)
            assert "server" not in response.headers, path
            assert response.headers["x-frame-options"] == "DENY"
        rebound = httpx.get(f"{process.url}/", headers={"Host": "evil.example"}, timeout=10)
        assert (rebound.status_code, rebound.json()["error"]["code"]) == (400, "bad_host")
    log = process.log()
    assert "CHAINWIRE_CORS_ORIGINS=https://dash.example" in log
    assert ("CHAINWIRE_ALLOWED_HOSTS=localhost,127.0.0.1,::1,*.localhost "
            "(default for this bind address)") in log
