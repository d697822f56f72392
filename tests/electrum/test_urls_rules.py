"""Server strings at their edges: what is accepted as which server, and what a bad one says."""

from __future__ import annotations

import pytest

from stream.electrum.urls import ServerAddress, parse_server, parse_servers


@pytest.mark.parametrize(("text", "server"), [
    ("tcp://electrum.example.org:50001/", ServerAddress("tcp", "electrum.example.org", 50001)),
    ("  SSL://eXample.org:50002//  ", ServerAddress("ssl", "example.org", 50002)),
    ("tcp://Xeon.example:1", ServerAddress("tcp", "xeon.example", 1)),
    ("ssl://[2001:DB8::1]:65535/", ServerAddress("ssl", "2001:db8::1", 65535)),
])
def test_accepted_servers_are_read_case_insensitively_without_a_trailing_slash(
    text: str, server: ServerAddress,
) -> None:
    assert parse_server(text) == server


def test_the_canonical_url_brackets_ipv6_and_names_the_scheme() -> None:
    assert parse_server("SSL://[::1]:50002").url == "ssl://[::1]:50002"
    assert str(parse_server("tcp://A.b:7")) == "tcp://a.b:7"


@pytest.mark.parametrize(("text", "message"), [
    (42, "server must be a string like 'ssl://host:50002', got 42"),
    ("electrum.org:50001", "server must start with tcp:// or ssl://, got 'electrum.org:50001'"),
    ("ssl://[::1]]:5", "server needs [ipv6]:port, got 'ssl://[::1]]:5'"),
    ("ssl://[::1]x50001", "server needs [ipv6]:port, got 'ssl://[::1]x50001'"),
    ("ssl://[::1", "server needs [ipv6]:port, got 'ssl://[::1'"),
    ("tcp://host", "server needs an explicit port, got 'tcp://host'"),
    ("tcp://a:b:1", "IPv6 hosts must be in brackets, got 'tcp://a:b:1'"),
    ("tcp://a/b:1", "server has an invalid host, got 'tcp://a/b:1'"),
    ("tcp://user@host:1", "server has an invalid host, got 'tcp://user@host:1'"),
    ("tcp://a:1X", "server port must be 1-65535, got 'tcp://a:1X'"),
    ("tcp://a:65536", "server port must be 1-65535, got 'tcp://a:65536'"),
    ("tcp://a:0", "server port must be 1-65535, got 'tcp://a:0'"),
])
def test_a_bad_server_string_is_refused_saying_what_is_wrong(text: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_server(text)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_a_server_list_keeps_the_first_of_each_server_in_order() -> None:
    servers = parse_servers(["ssl://b:2", "tcp://a:1", "SSL://B:2/"])
    assert servers == (ServerAddress("ssl", "b", 2), ServerAddress("tcp", "a", 1))
    assert parse_servers(("tcp://a:1",)) == (ServerAddress("tcp", "a", 1),)


@pytest.mark.parametrize("texts", ["", " , ,", [], ()])
def test_an_empty_server_list_is_refused(texts: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_servers(texts)
    assert str(caught.value) == "servers must name at least one Electrum server"


def test_servers_must_be_a_list_or_a_comma_separated_string() -> None:
    with pytest.raises(ValueError) as caught:
        parse_servers({"tcp://a:1"})
    assert str(caught.value) == (
        "servers must be a list of 'tcp://host:port' strings, got {'tcp://a:1'}")
