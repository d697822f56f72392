"""Server strings and pool settings are validated with clear messages."""

from __future__ import annotations

import pytest

from stream.electrum import PoolConfig, ServerPool, parse_server, parse_servers


def test_parses_tcp_ssl_and_ipv6() -> None:
    tcp = parse_server("tcp://Electrum.Example.org:50001")
    assert (tcp.scheme, tcp.host, tcp.port) == ("tcp", "electrum.example.org", 50001)
    assert not tcp.use_tls
    ssl = parse_server("ssl://[::1]:50002")
    assert ssl.host == "::1" and ssl.use_tls and ssl.url == "ssl://[::1]:50002"


@pytest.mark.parametrize(
    "text",
    ["electrum.org:50001", "http://a:1", "tcp://a", "tcp://a:0", "tcp://a:70000",
     "tcp://:50001", "tcp://::1:5", "ssl://a:b", "tcp://a b:1"],
)
def test_rejects_bad_server_strings_naming_them(text: str) -> None:
    with pytest.raises(ValueError, match="got"):
        parse_server(text)


def test_server_lists_drop_duplicates_and_accept_commas() -> None:
    servers = parse_servers("tcp://a:1, ssl://b:2,tcp://a:1")
    assert [s.url for s in servers] == ["tcp://a:1", "ssl://b:2"]
    with pytest.raises(ValueError):
        parse_servers([])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"network": "moon"}, "network"),
        ({"min_size": 40}, "min_size"),
        ({"max_chunk": 0}, "max_chunk"),
        ({"request_timeout": -5}, "request_timeout"),
        ({"protocol_max": "1.7"}, "protocol_max"),
        ({"pinned_certs": {"a:1": "zz"}}, "pinned_certs"),
        ({"backoff_max": 0.5}, "backoff_max"),
    ],
)
def test_config_rejects_bad_limits(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PoolConfig(**kwargs)  # type: ignore[arg-type]


def test_pool_constructor_validates_and_does_not_connect() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        ServerPool(["tcp://127.0.0.1:1"], max_retries=-1)
    with pytest.raises(TypeError):
        ServerPool(["tcp://127.0.0.1:1"], no_such_limit=1)
    pool = ServerPool(["tcp://127.0.0.1:1"], network="regtest")
    assert pool.stats()["size"] == 0


@pytest.mark.anyio
async def test_using_a_pool_outside_async_with_is_a_clear_error() -> None:
    pool = ServerPool(["tcp://127.0.0.1:1"])
    with pytest.raises(RuntimeError, match="not open"):
        await pool.request("server.ping")
