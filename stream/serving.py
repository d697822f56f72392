"""How Chainwire runs under uvicorn: one place for ``chainwire serve``, the tests and the
benchmarks, so all three measure and test the same server."""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.types import ASGIApp

from stream.transports.uvicorn_ws import BulkWriteWebSocketProtocol

__all__ = ["uvicorn_config"]


def uvicorn_config(app: ASGIApp, *, host: str, port: int, log_level: str = "info",
                   ws_compression: bool = False, **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings for Chainwire; ``overrides`` go to ``uvicorn.Config`` as is.

    ``ws_compression`` off by default: permessage-deflate compresses every frame once per
    client (each has its own zlib context), which at fan-out scale costs more CPU than
    everything else a delivery does.
    """
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,  # keep the process's own logging set-up
        "log_level": log_level,
        "access_log": log_level == "debug",
        "lifespan": "on",
        "ws": BulkWriteWebSocketProtocol,
        "ws_per_message_deflate": ws_compression,
        "backlog": 4096,
        **overrides,
    }
    return uvicorn.Config(app, **options)
