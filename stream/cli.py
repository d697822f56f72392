"""The ``chainwire`` command: ``chainwire serve [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from stream import __version__
from stream.logs import RedactSecrets
from stream.settings import (
    ConfigError,
    Settings,
    describe_variables,
    load_settings,
    unknown_variables,
)

__all__ = ["main"]

logger = logging.getLogger("chainwire")

EXIT_CONFIG = 2
EXIT_STARTUP_FAILED = 3


def _variables_help() -> str:
    lines = ["environment variables (also read from ./.env; flags override them):"]
    for name, default, description in describe_variables():
        lines.append(f"  {name}  [default: {default}]")
        lines.extend(textwrap.wrap(description, 76, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chainwire",
        description="Real-time Bitcoin event streaming over SSE and WebSocket.",
    )
    parser.add_argument("--version", action="version", version=f"chainwire {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the Chainwire server (HTTP, SSE and WebSocket on one port).",
        epilog=_variables_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to listen on (overrides CHAINWIRE_HOST)")
    serve.add_argument(
        "--port", type=int, help="port to listen on (overrides CHAINWIRE_PORT / PORT)"
    )
    serve.add_argument(
        "--env-file", default=".env", metavar="PATH",
        help="read variables from this file too (default: ./.env, if present)",
    )
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # uvicorn's loggers get it where records are made (stream.serving); on the handler
    # too, so no logger of any library can write an API key to stderr.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())


def _log_effective(settings: Settings) -> None:
    logger.info("chainwire %s starting", __version__)
    for name, value in settings.redacted().items():
        logger.info("  %s=%s", name, value)
    for name in unknown_variables():
        logger.warning("%s is not a Chainwire setting (a typo?); ignored", name)


def serve(settings: Settings) -> int:
    """Run the server until SIGINT/SIGTERM; the return value is the exit code."""
    # Imported here so `--help` and config errors stay instant.
    from stream.app import create_app
    from stream.serving import GracefulServer, uvicorn_config

    app = create_app(settings)
    config = uvicorn_config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level,
                            ws_compression=settings.ws_compression,
                            header_timeout=settings.header_timeout,
                            trusted_proxies=settings.trusted_proxies,
                            ws_max_message_bytes=settings.ws_max_message_bytes,
                            timeout_graceful_shutdown=10)
    server = GracefulServer(config, app)
    server.run()  # installs SIGINT/SIGTERM handlers and shuts down gracefully
    return 0 if server.started else EXIT_STARTUP_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        settings = load_settings(overrides, env_file=args.env_file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"chainwire: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings.log_level)
    _log_effective(settings)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
