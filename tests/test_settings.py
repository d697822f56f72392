"""Configuration is validated at start, one clear line per problem, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.electrum.default_servers import DEFAULT_SERVERS, NETWORKS
from stream.settings import ConfigError, load_settings, unknown_variables


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CHAINWIRE_") or name == "PORT":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def problems_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return caught.value.problems


def test_defaults_match_the_public_interface() -> None:
    settings = load_settings()
    assert settings.network == "mainnet"
    assert settings.database_url == "sqlite:///chainwire.db"
    assert (settings.window_ms, settings.window_events) == (500, 10)
    assert settings.large_tx_sats == 1_000_000_000
    assert settings.scan_blocks is False and settings.batching is True
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.retention_hours == 168
    assert settings.effective_servers == DEFAULT_SERVERS["mainnet"]


@pytest.mark.parametrize("network", [n for n in NETWORKS if n != "regtest"])
def test_every_public_network_has_tls_default_servers(network: str) -> None:
    servers = DEFAULT_SERVERS[network]
    assert len(servers) >= 3
    assert all(url.startswith("ssl://") for url in servers)
    assert len(set(servers)) == len(servers)


def test_non_integer_window_names_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert problems_for(monkeypatch, CHAINWIRE_WINDOW_MS="abc") == [
        'CHAINWIRE_WINDOW_MS must be a positive integer (at most 60000), got "abc"'
    ]


def test_every_problem_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    problems = problems_for(
        monkeypatch, CHAINWIRE_WINDOW_EVENTS="0", CHAINWIRE_NETWORK="moon",
        CHAINWIRE_SCAN_BLOCKS="maybe",
    )
    assert len(problems) == 3
    assert any(p.startswith("CHAINWIRE_WINDOW_EVENTS must be") and '"0"' in p for p in problems)
    assert any(p.startswith("CHAINWIRE_NETWORK must be one of") and '"moon"' in p
               for p in problems)
    assert any(p.startswith("CHAINWIRE_SCAN_BLOCKS must be") for p in problems)


def test_a_bad_server_url_is_named_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    [problem] = problems_for(monkeypatch, CHAINWIRE_SERVERS="tcp://a.example:50001, http://b")
    assert problem.endswith('got "http://b"')


def test_regtest_requires_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems_for(monkeypatch, CHAINWIRE_NETWORK="regtest") == [
        "CHAINWIRE_SERVERS is required when CHAINWIRE_NETWORK=regtest"
    ]


def test_database_password_never_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    [problem] = problems_for(monkeypatch, CHAINWIRE_DATABASE_URL="mysql://app:hunter2@db/x")
    assert "hunter2" not in problem and "CHAINWIRE_DATABASE_URL" in problem
    monkeypatch.setenv("CHAINWIRE_DATABASE_URL", "postgresql://app:hunter2@db:5432/x")
    monkeypatch.setenv("CHAINWIRE_API_KEYS", "k1,k2")
    shown = load_settings().redacted()
    assert "hunter2" not in str(shown) and "k1" not in str(shown)
    assert shown["CHAINWIRE_DATABASE_URL"] == "postgresql://app:***@db:5432/x"
    assert shown["CHAINWIRE_API_KEYS"] == "2 configured"


def test_comma_lists_and_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINWIRE_SERVERS", " tcp://127.0.0.1:50001 ,ssl://127.0.0.1:50002,")
    monkeypatch.setenv("CHAINWIRE_BATCHING", "off")
    monkeypatch.setenv("PORT", "9000")
    settings = load_settings()
    assert settings.servers == ("tcp://127.0.0.1:50001", "ssl://127.0.0.1:50002")
    assert settings.batching is False
    assert settings.port == 9000


def test_dotenv_is_read_and_flags_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CHAINWIRE_WINDOW_MS=250\nCHAINWIRE_PORT=8100\n")
    settings = load_settings({"port": 8200})
    assert settings.window_ms == 250
    assert settings.port == 8200


def test_unknown_chainwire_variables_are_reported() -> None:
    env = {"CHAINWIRE_WINDOWMS": "5", "CHAINWIRE_WINDOW_MS": "5", "HOME": "/root"}
    assert unknown_variables(env) == ["CHAINWIRE_WINDOWMS"]


@pytest.mark.parametrize("bad", [0, -1, True, "10"])
def test_stream_limits_refuse_anything_but_a_positive_number(bad: object) -> None:
    from stream.services import Limits

    with pytest.raises(ValueError, match=r"Limits\.client_buffer must be a positive number"):
        Limits(client_buffer=bad)  # type: ignore[arg-type]


def test_zero_addresses_per_ws_connection_is_a_valid_limit() -> None:
    from stream.services import Limits

    assert Limits(ws_max_addresses=0).ws_max_addresses == 0


def test_watch_list_bounds_are_validated_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems_for(monkeypatch, CHAINWIRE_MAX_WATCHED="0",
                        CHAINWIRE_WATCH_LEASE_SECONDS="soon") == [
        'CHAINWIRE_MAX_WATCHED must be a positive integer, got "0"',
        "CHAINWIRE_WATCH_LEASE_SECONDS must be a positive number of seconds (at most "
        '2592000), got "soon"']
    monkeypatch.setenv("CHAINWIRE_WATCH_LEASE_SECONDS", "1.5")
    monkeypatch.setenv("CHAINWIRE_MAX_WATCHED", "5")
    settings = load_settings(env_file=None)
    assert (settings.max_watched, settings.watch_lease_seconds) == (5, 1.5)
    assert settings.redacted()["CHAINWIRE_MAX_WATCHED"] == "5"  # logged at start
