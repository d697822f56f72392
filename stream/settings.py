"""Chainwire's configuration: every ``CHAINWIRE_*`` variable, read once and validated.

Values come from the environment, then a ``.env`` file in the working directory; the
CLI's flags override both. A bad value stops the server with one line per problem that
names the variable and what it expected (``load_settings`` raises ``ConfigError``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batcher.store import parse_database_url, redact_url
from stream.electrum.default_servers import DEFAULT_SERVERS
from stream.electrum.urls import parse_server
from stream.web.names import default_allowed_hosts, parse_host_pattern, parse_origin

__all__ = ["ENV_PREFIX", "ConfigError", "Settings", "describe_variables", "load_settings"]

ENV_PREFIX = "CHAINWIRE_"

Network = Literal["mainnet", "testnet", "testnet4", "signet", "regtest"]
LogLevel = Literal["debug", "info", "warning", "error"]
CommaList = Annotated[tuple[str, ...], NoDecode]


def _split_commas(value: Any) -> Any:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; lists pass through (constructor use)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _positive(default: float, description: str, unit: str = "integer") -> Any:
    """A stream limit (``stream.services.Limits`` has a field of the same name)."""
    return Field(default, gt=0, description=description,
                 json_schema_extra={"expect": f"a positive {unit}"})


class ConfigError(Exception):
    """Configuration that Chainwire cannot start with; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings(BaseSettings):
    """The effective configuration. Field descriptions feed ``chainwire serve --help``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    network: Network = Field(
        "mainnet",
        description="mainnet, testnet, testnet4, signet or regtest",
        json_schema_extra={"expect": "one of mainnet, testnet, testnet4, signet, regtest"},
    )
    servers: CommaList = Field(
        (),
        description="comma-separated tcp://host:port / ssl://host:port Electrum servers "
        "(default: a built-in list of public servers for the network; required for regtest)",
        json_schema_extra={"expect": "a comma-separated list of tcp://host:port or ssl://host:port"},
    )
    database_url: str = Field(
        "sqlite:///chainwire.db",
        description="postgresql://user:pass@host:port/db, or sqlite:///relative.db / "
        "sqlite:////absolute/path.db for the embedded store",
        json_schema_extra={"expect": "a postgresql:// or sqlite:/// URL", "secret": True},
    )
    window_ms: int = Field(
        500, gt=0, le=60_000,
        description="a batch window closes this many milliseconds after its first event",
        json_schema_extra={"expect": "a positive integer (at most 60000)"},
    )
    window_events: int = Field(
        10, gt=0, le=10_000,
        description="... or when it holds this many events of one type",
        json_schema_extra={"expect": "a positive integer (at most 10000)"},
    )
    batching: bool = Field(
        True,
        description="on/off: off makes each event its own batch (for comparison)",
        json_schema_extra={"expect": "on or off"},
    )
    large_tx_sats: int = Field(
        1_000_000_000, ge=0,
        description="tx.large threshold: total output value in satoshis",
        json_schema_extra={"expect": "a non-negative integer (satoshis)"},
    )
    scan_blocks: bool = Field(
        False,
        description="scan every transaction of each new block for tx.large",
        json_schema_extra={"expect": "true or false"},
    )
    watch: CommaList = Field(
        (),
        description="comma-separated addresses to watch from the start",
        json_schema_extra={"expect": "a comma-separated list of addresses"},
    )
    max_watched: int = Field(
        100_000, gt=0,
        description="at most this many watched addresses in all; past it a new watch is "
        "refused with watch_limit (HTTP 409)",
        json_schema_extra={"expect": "a positive integer"},
    )
    watch_lease_seconds: float = Field(
        600.0, gt=0, le=30 * 86400,
        description="an address only stream subscriptions watch is unwatched this long "
        "after its last subscriber left (time for a reconnect to resume)",
        json_schema_extra={"expect": "a positive number of seconds (at most 2592000)"},
    )
    confirmations: int = Field(
        6, ge=1, le=100,
        description="address events are updated until a transaction has this many confirmations",
        json_schema_extra={"expect": "an integer from 1 to 100"},
    )
    retention_hours: int = Field(
        168, gt=0,
        description="stored batches older than this are pruned",
        json_schema_extra={"expect": "a positive integer (hours)"},
    )
    api_keys: CommaList = Field(
        (),
        description="comma-separated API keys; when set, every API and stream needs one "
        "(Authorization: Bearer KEY, or ?key=KEY); empty means open",
        json_schema_extra={"expect": "a comma-separated list of keys", "secret": True},
    )
    cors_origins: CommaList = Field(
        (),
        description="comma-separated origins (https://host[:port]) whose pages may use the "
        "API, /events and /ws from a browser; * for any; empty means same origin only",
        json_schema_extra={"expect": "a comma-separated list of origins like "
                           "https://example.com (scheme://host[:port], no path), or *"},
    )
    allowed_hosts: CommaList = Field(
        (),
        description="comma-separated Host names served (example.com, *.example.com, an IP, "
        "or *); empty: the localhost names when bound to loopback, any host otherwise",
        json_schema_extra={"expect": "a comma-separated list of host names or IPs "
                           "(no port; *.example.com for subdomains; * for any)"},
    )
    ws_compression: bool = Field(
        False,
        description="accept WebSocket permessage-deflate when a client offers it: less "
        "bandwidth, but every frame is compressed once per client (CPU at fan-out scale)",
        json_schema_extra={"expect": "true or false"},
    )
    header_timeout: float = Field(
        10.0, gt=0, le=300,
        description="seconds a client has to send a whole request head (slowloris guard); "
        "a connection still short of it then is closed (408)",
        json_schema_extra={"expect": "a number of seconds above 0 (at most 300)"},
    )
    # Stream limits: each is the `Limits` field of the same name (Limits.from_settings).
    client_buffer: int = _positive(1000, "batches buffered for a client that is not "
                                   "reading; past it the client is cut with its resume point")
    client_buffer_bytes: int = _positive(16 * 1024 * 1024, "... or this many bytes of "
                                         "batch JSON, whichever comes first")
    ws_max_addresses: int = _positive(1000, "addresses one WebSocket connection may name")
    ws_max_message_bytes: int = _positive(64 * 1024, "largest WebSocket message accepted")
    max_connections_per_ip: int = _positive(100, "open streams (SSE and WS together) per "
                                            "client IP; more get HTTP 429")
    max_connections: int = _positive(10_000, "open streams in total; more get HTTP 503")
    max_replays: int = _positive(8, "resumes that read the store at once; the others "
                                 "wait their turn")
    ws_max_errors: int = _positive(50, "bad WebSocket messages before the server closes "
                                   "the connection (1008)")
    ws_send_timeout: float = _positive(30.0, "seconds a WebSocket client may stop reading "
                                       "before it is let go", "number (seconds)")
    sse_ping_seconds: float = _positive(15.0, "seconds between SSE keep-alive comments",
                                        "number (seconds)")
    sse_retry_ms: int = _positive(2000, "SSE retry hint: how soon EventSource reconnects")
    sse_send_timeout: float = _positive(30.0, "seconds an SSE client may read nothing "
                                        "before its stream is reset", "number (seconds)")
    sse_max_addresses: int = _positive(1000, "address= parameters one SSE request may "
                                       "name; more get HTTP 400")
    trusted_proxies: CommaList = Field(
        (),
        description="comma-separated IPs/CIDRs of proxies whose X-Forwarded-For is "
        "believed (the client IP for the caps and logs); empty: nobody's",
        json_schema_extra={"expect": "a comma-separated list of IP addresses or CIDRs"},
    )
    host: str = Field(
        "127.0.0.1", min_length=1,
        description="address to listen on (--host overrides)",
        json_schema_extra={"expect": "a host name or IP address"},
    )
    port: int = Field(
        8000, ge=0, le=65535,
        validation_alias=AliasChoices(f"{ENV_PREFIX}PORT", "PORT"),
        description="port to listen on; PORT is honoured too (--port overrides)",
        json_schema_extra={"expect": "a port number from 0 to 65535"},
    )
    log_level: LogLevel = Field(
        "info",
        description="debug, info, warning or error",
        json_schema_extra={"expect": "one of debug, info, warning, error"},
    )

    @field_validator("servers", "watch", "api_keys", "trusted_proxies", mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split_commas(value)

    # Stored as browsers send them (lower case, no default port), so lookups are exact;
    # the bad item is the error's value, as for the servers.
    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _cross_site_lists(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(parse_origin(item) for item in value))

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(parse_host_pattern(item) for item in value))

    @field_validator("log_level", "network", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    # The same checks the pool (parse_server) and open_store (parse_database_url) apply, so
    # what passes here also starts. The error carries the bad item: _problem_line names it.
    @field_validator("servers")
    @classmethod
    def _server_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            try:
                parse_server(url)
            except ValueError:
                raise ValueError(url) from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Strict, as uvicorn parses them: "10.0.0.1/8" would silently trust nobody there.
        for item in value:
            try:
                ipaddress.ip_network(item)
            except ValueError:
                raise ValueError(item) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            parse_database_url(value)
        except ValueError:
            raise ValueError(value) from None
        return value

    @model_validator(mode="after")
    def _regtest_needs_servers(self) -> Settings:
        if self.network == "regtest" and not self.servers:
            raise ValueError("CHAINWIRE_SERVERS is required when CHAINWIRE_NETWORK=regtest")
        return self

    @property
    def effective_allowed_hosts(self) -> tuple[str, ...]:
        """The Host patterns enforced (``stream.web.names.default_allowed_hosts``)."""
        return default_allowed_hosts(self.allowed_hosts, self.host)

    @property
    def effective_servers(self) -> tuple[str, ...]:
        """The configured servers, or the built-in list for the network."""
        return self.servers or DEFAULT_SERVERS[self.network]

    def redacted(self) -> dict[str, str]:
        """Effective values for the start-up log, with secrets hidden."""
        shown: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if name == "servers":
                value = self.effective_servers
                text = f"{len(value)} servers ({'configured' if self.servers else 'built-in'})"
            elif name == "allowed_hosts":
                text = ",".join(self.effective_allowed_hosts)
                text += "" if self.allowed_hosts else " (default for this bind address)"
            elif name == "database_url":
                text = redact_url(value, mask=_MASK)
            elif extra.get("secret"):
                text = f"{len(value)} configured" if value else "none (open)"
            elif isinstance(value, tuple):
                text = ",".join(value) if value else "(none)"
            elif isinstance(value, bool):
                text = "on" if value else "off"
            else:
                text = str(value)
            shown[env_name(name)] = text
        return shown


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


# Where a database password was, in the start-up log and in error lines.
_MASK = "***"


def describe_variables() -> list[tuple[str, str, str]]:
    """``(variable, default, description)`` for every setting, for ``--help``."""
    rows = []
    for name, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, tuple):
            shown = ",".join(default) if default else '""'
        elif isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = str(default)
        rows.append((env_name(name), shown, info.description or ""))
    return rows


def _field_for(loc_head: str) -> str | None:
    """The settings field an error location names (a field name, or an alias like PORT)."""
    if loc_head in Settings.model_fields:
        return loc_head
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and loc_head in alias.choices:
            return name
    return None


def _problem_line(error: Mapping[str, Any]) -> str:
    """One human line for one pydantic error: the variable, what it expects, what it got."""
    loc = error.get("loc") or ()
    field = _field_for(str(loc[0])) if loc else None
    if field is None:  # a model-level rule: its message is already a full sentence
        return str(error.get("ctx", {}).get("error") or error.get("msg"))
    info = Settings.model_fields[field]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    expect = str(extra.get("expect", "a valid value"))
    # Our own validators raise ValueError(bad_item): name that item, not the whole list.
    got = error.get("ctx", {}).get("error") or error.get("input")
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        variable = " or ".join(str(choice) for choice in alias.choices)
    else:
        variable = env_name(field)
    if field == "database_url":
        got = redact_url(str(got), mask=_MASK)
    elif extra.get("secret"):
        return f"{variable} must be {expect}"
    return f'{variable} must be {expect}, got "{got}"'


def load_settings(
    overrides: Mapping[str, Any] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """Read and validate the configuration; raise ``ConfigError`` listing every problem."""
    try:
        return Settings(_env_file=env_file, **dict(overrides or {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = [_problem_line(error) for error in exc.errors()]
        raise ConfigError(problems) from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``CHAINWIRE_*`` names in the environment that no setting reads (likely typos)."""
    known = {env_name(name) for name in Settings.model_fields}
    env = os.environ if environ is None else environ
    return sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
