"""One check per URL kind: the settings accept exactly what the pool and the store accept,
and every password is hidden by the one redactor."""

from __future__ import annotations

from pathlib import Path

import pytest

from batcher.store import open_store, redact_url
from stream.electrum import parse_server
from stream.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CHAINWIRE_") or name == "PORT":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def settings_accept(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> bool:
    monkeypatch.setenv(name, value)
    try:
        load_settings()
    except ConfigError:
        return False
    return True


def accepts(check: object, value: str) -> bool:
    try:
        check(value)  # type: ignore[operator]
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("tcp://a.example:50001", True),
        ("ssl://[::1]:50002", True),
        ("ssl://a.example:50002/", True),
        ("tcp://user@a.example:50001", False),  # urlsplit took it; the pool never did
        ("tcp://a.example:1/x", False),
        ("tcp://::1:5", False),
        ("tcp://a.example", False),
        ("http://b", False),
    ],
)
def test_settings_take_the_servers_the_pool_takes(
    monkeypatch: pytest.MonkeyPatch, url: str, ok: bool,
) -> None:
    assert accepts(parse_server, url) is ok
    assert settings_accept(monkeypatch, "CHAINWIRE_SERVERS", url) is ok


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("sqlite:///chainwire.db", True),
        ("sqlite:////tmp/chainwire.db", True),
        ("postgresql://app:secret@db:5432/x", True),
        ("postgres://db/x", True),
        ("sqlite:///", False),  # names no file
        ("postgresql:x", False),
        ("POSTGRESQL://db/x", False),
        ("mysql://app:secret@db/x", False),
    ],
)
def test_settings_take_the_database_urls_the_store_takes(
    monkeypatch: pytest.MonkeyPatch, url: str, ok: bool,
) -> None:
    assert accepts(open_store, url) is ok
    assert settings_accept(monkeypatch, "CHAINWIRE_DATABASE_URL", url) is ok


def test_one_redactor_with_or_without_a_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "mysql://app:hunter2@db/x"
    assert redact_url(url) == "mysql://app@db/x"
    assert redact_url(url, mask="***") == "mysql://app:***@db/x"
    assert redact_url("postgresql://app@db/x", mask="***") == "postgresql://app@db/x"
    monkeypatch.setenv("CHAINWIRE_DATABASE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == [
        'CHAINWIRE_DATABASE_URL must be a postgresql:// or sqlite:/// URL, '
        'got "mysql://app:***@db/x"']


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@ss@db.example/chainwire", "postgresql://u@db.example/chainwire"),
        ("postgresql://u:s3cret@db.example:5432", "postgresql://u@db.example:5432"),
        ("postgresql://u@db.example/x", "postgresql://u@db.example/x"),
    ],
)
def test_no_part_of_a_password_survives_redaction(url: str, shown: str) -> None:
    assert redact_url(url) == shown
