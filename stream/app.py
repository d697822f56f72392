"""The Starlette application: routes, static dashboard, and the lifespan that runs Chainwire.

The lifespan is the one place that wires pool -> store -> batcher -> hub -> producers and
runs them under one task group (see ``stream.runtime``). Start-up opens no Electrum
connection: the pool grows on the first request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stream import __version__
from stream.settings import Settings

__all__ = ["STATIC_DIR", "create_app"]

logger = logging.getLogger(__name__)

#: The dashboard's files: ``static/`` at the top of the source tree.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def create_app(settings: Settings) -> Starlette:
    """Build the ASGI app for ``settings``; nothing runs until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.info("chainwire %s ready (network %s)", __version__, settings.network)
        yield
        logger.info("chainwire stopped")

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "version": __version__, "network": settings.network}
        )

    async def dashboard(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html")

    routes = [
        Route("/", dashboard),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    return app
