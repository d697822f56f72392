"""The pure rules behind cross-site protection: origins, hosts, integers, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.settings import ConfigError, load_settings
from stream.web.names import (
    LOOPBACK_HOSTS,
    default_allowed_hosts,
    host_allowed,
    host_of,
    origin_allowed,
    parse_host_pattern,
    parse_origin,
)
from stream.web.params import MAX_INT, parse_uint
from stream.web.writes import is_json


@pytest.mark.parametrize(("given", "stored"), [
    ("https://Example.COM", "https://example.com"),
    ("https://example.com:443", "https://example.com"),
    ("http://example.com:80", "http://example.com"),
    ("http://example.com:8080", "http://example.com:8080"),
    ("https://example.com:80", "https://example.com:80"),
    ("http://[::1]:8000", "http://[::1]:8000"),
    (" * ", "*"),
])
def test_origins_are_stored_as_browsers_send_them(given: str, stored: str) -> None:
    assert parse_origin(given) == stored


@pytest.mark.parametrize("bad", ["example.com", "https://example.com/", "https://x.com/app",
                                 "ftp://x.com", "https://user@x.com", "https://x.com?a=1",
                                 "https://x.com:port", "null", ""])
def test_anything_but_scheme_host_port_is_not_an_origin(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_origin(bad)


@pytest.mark.parametrize(("origin", "host", "allowed"), [
    (None, "example.com", True),  # not a browser page
    ("https://example.com", "example.com", True),
    ("https://example.com", "example.com:443", True),
    ("http://example.com:8080", "example.com:8080", True),
    ("http://EXAMPLE.com:8080", "example.COM:8080", True),
    ("http://[::1]:8000", "[::1]:8000", True),
    ("http://example.com:8080", "example.com", False),  # a proxy that dropped the port
    ("http://example.com", "example.com:8080", False),
    ("http://127.0.0.1:9000", "127.0.0.1:8000", False),  # another local service
    ("http://evil.example", "example.com", False),
    ("http://example.com.evil.example", "example.com", False),
    ("null", "example.com", False),
    ("http://example.com", None, False),
])
def test_a_page_is_allowed_on_its_own_origin_only(
    origin: str | None, host: str | None, allowed: bool,
) -> None:
    assert origin_allowed(origin, host, ()) is allowed


def test_listed_origins_and_the_wildcard_are_allowed() -> None:
    listed = ("https://dash.example",)
    assert origin_allowed("https://dash.example", "api.example", listed)
    assert origin_allowed("https://DASH.example", "api.example", listed)
    assert not origin_allowed("http://dash.example", "api.example", listed)
    assert origin_allowed("http://anything.example", "api.example", ("*",))


@pytest.mark.parametrize(("header", "host"), [
    ("Example.com", "example.com"), ("example.com:8000", "example.com"),
    ("127.0.0.1:8000", "127.0.0.1"), ("[::1]:8000", "::1"), ("[::1]", "::1"),
    ("localhost.", "localhost."),
    (None, None), ("", None), ("a:b:c", None), ("[::1", None), ("[nope]:80", None),
    ("example.com:99999", None), ("exa mple.com", None), ("ex\u00e4mple.com", None),
    ("example.com:", None), ("-bad.com", None),
])
def test_the_host_header_is_parsed_strictly(header: str | None, host: str | None) -> None:
    assert host_of(header) == host


@pytest.mark.parametrize(("host", "patterns", "allowed"), [
    ("localhost", LOOPBACK_HOSTS, True),
    ("app.localhost", LOOPBACK_HOSTS, True),
    ("::1", LOOPBACK_HOSTS, True),
    ("localhost.", LOOPBACK_HOSTS, True),
    ("evil.example", LOOPBACK_HOSTS, False),
    ("localhost.evil.example", LOOPBACK_HOSTS, False),
    ("example.com", ("*.example.com",), False),  # a wildcard is for subdomains
    ("a.b.example.com", ("*.example.com",), True),
    ("evilexample.com", ("*.example.com",), False),
    ("anything", ("*",), True),
])
def test_host_patterns(host: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


@pytest.mark.parametrize(("bind", "hosts"), [
    ("127.0.0.1", LOOPBACK_HOSTS), ("127.0.0.2", LOOPBACK_HOSTS), ("::1", LOOPBACK_HOSTS),
    ("localhost", LOOPBACK_HOSTS), ("0.0.0.0", ("*",)), ("::", ("*",)),
    ("10.0.0.5", ("*",)), ("chainwire.example", ("*",)),
])
def test_the_default_hosts_follow_the_bind_address(bind: str, hosts: tuple[str, ...]) -> None:
    assert default_allowed_hosts((), bind) == hosts
    assert default_allowed_hosts(("only.example",), bind) == ("only.example",)


@pytest.mark.parametrize("bad", ["example.com:80", "http://example.com", "a.*.com", "*example.com",
                                 "exa mple.com", "example.com/", "[::1]:80", "**"])
def test_a_host_pattern_has_no_port_scheme_or_inner_wildcard(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_host_pattern(bad)


def test_host_patterns_are_normalised() -> None:
    assert parse_host_pattern("Example.COM") == "example.com"
    assert parse_host_pattern("[::1]") == "::1"
    assert parse_host_pattern("*.Example.com") == "*.example.com"


@pytest.mark.parametrize(("raw", "value"), [
    ("0", 0), ("007", 7), (str(MAX_INT), MAX_INT), ("0" * 5000 + "5", 5),
    (str(MAX_INT + 1), None), ("9" * 20, None), ("9" * 5000, None), ("9" * 4301, None),
    ("-1", None), ("+1", None), ("1_0", None), ("\u0661", None), ("\uff11", None),
    ("", None), (" 1", None), ("1.0", None),
])
def test_integers_are_plain_digits_up_to_int64_checked_before_conversion(
    raw: str, value: int | None,
) -> None:
    assert parse_uint(raw) == value


@pytest.mark.parametrize(("content_type", "json"), [
    ("application/json", True), ("Application/JSON; charset=utf-8", True),
    ("text/plain", False), ("application/jsonp", False), ("", False), (None, False),
    ("application/x-www-form-urlencoded", False), ("application/json-seq", False),
])
def test_only_json_is_a_write(content_type: str | None, json: bool) -> None:
    assert is_json(content_type) is json


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CHAINWIRE_") or name == "PORT":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_bad_origins_and_hosts_are_named_in_one_line_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHAINWIRE_CORS_ORIGINS", "https://ok.example, https://x.example/app")
    monkeypatch.setenv("CHAINWIRE_ALLOWED_HOSTS", "ok.example,bad.example:80")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == [
        'CHAINWIRE_CORS_ORIGINS must be a comma-separated list of origins like '
        'https://example.com (scheme://host[:port], no path), or *, got "https://x.example/app"',
        'CHAINWIRE_ALLOWED_HOSTS must be a comma-separated list of host names or IPs '
        '(no port; *.example.com for subdomains; * for any), got "bad.example:80"',
    ]


@pytest.mark.usefixtures("clean_env")
def test_the_start_log_shows_the_hosts_actually_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.cors_origins == () and settings.allowed_hosts == ()
    shown = settings.redacted()
    assert shown["CHAINWIRE_ALLOWED_HOSTS"] == (
        "localhost,127.0.0.1,::1,*.localhost (default for this bind address)")
    assert shown["CHAINWIRE_CORS_ORIGINS"] == "(none)"
    assert load_settings({"host": "0.0.0.0"}).redacted()["CHAINWIRE_ALLOWED_HOSTS"] == (
        "* (default for this bind address)")
    monkeypatch.setenv("CHAINWIRE_ALLOWED_HOSTS", "Chainwire.example")
    monkeypatch.setenv("CHAINWIRE_CORS_ORIGINS", "https://Dash.example:443")
    settings = load_settings({"host": "0.0.0.0"})
    assert settings.redacted()["CHAINWIRE_ALLOWED_HOSTS"] == "chainwire.example"
    assert settings.cors_origins == ("https://dash.example",)
