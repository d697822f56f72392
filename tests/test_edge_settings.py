"""CHAINWIRE_HEADER_TIMEOUT: read, validated with one line naming it, logged at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CHAINWIRE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_the_header_timeout_defaults_to_10_s_and_is_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().header_timeout == 10.0
    monkeypatch.setenv("CHAINWIRE_HEADER_TIMEOUT", "2.5")
    settings = load_settings()
    assert settings.header_timeout == 2.5
    assert settings.redacted()["CHAINWIRE_HEADER_TIMEOUT"] == "2.5"


@pytest.mark.parametrize("bad", ["0", "-1", "301", "soon"])
def test_a_bad_header_timeout_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, bad: str,
) -> None:
    monkeypatch.setenv("CHAINWIRE_HEADER_TIMEOUT", bad)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == [
        f'CHAINWIRE_HEADER_TIMEOUT must be a number of seconds above 0 (at most 300), got "{bad}"'
    ]
