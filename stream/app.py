"""The Starlette application: routes, static dashboard, and the lifespan that runs Chainwire.

The lifespan enters ``run_services`` (the one place that wires pool -> store -> batcher
-> hub -> producers). Start-up never waits on an Electrum server: the producers start
following the chain in the background.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from batcher.store import StoreError
from stream import __version__
from stream.metrics import metrics_endpoint
from stream.services import Limits, Services, run_services
from stream.settings import Settings
from stream.transports.sse import events_endpoint
from stream.transports.ws import ws_endpoint
from stream.transports.ws_upgrade import upgrade_required
from stream.web.auth import ApiKeyMiddleware
from stream.web.errors import (
    ApiError,
    api_error_handler,
    http_exception_handler,
    internal_error_handler,
    store_error_handler,
)
from stream.web.headers import SecurityHeadersMiddleware
from stream.web.health import check_health
from stream.web.hosts import HostGuard
from stream.web.origins import OriginGuard, TypedCORSMiddleware
from stream.web.routes import api_routes
from stream.web.writes import JsonWritesMiddleware

__all__ = ["STATIC_DIR", "create_app", "end_streams"]

logger = logging.getLogger(__name__)

#: The dashboard's files: ``static/`` at the top of the source tree.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


async def healthz(request: Request) -> Response:
    services: Services | None = getattr(request.app.state, "services", None)
    body: dict[str, Any] = {"version": __version__,
                            "network": request.app.state.settings.network}
    if services is None:
        return JSONResponse({"status": "starting", **body}, 503)
    problems = await check_health(services)
    status = "ok" if not problems else "unhealthy"
    return JSONResponse({"status": status, **body, "problems": problems},
                        200 if not problems else 503)


async def dashboard(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html")


async def end_streams(app: Starlette) -> None:
    """First step of shutdown, before the server stops serving: end every stream so
    clients get their proper goodbye (SSE retry hint, WS close 1001), and wait for them
    to go (callers bound the wait)."""
    services: Services | None = getattr(app.state, "services", None)
    if services is None:
        return
    services.begin_shutdown()
    await services.hub.wait_drained()


def create_app(settings: Settings, limits: Limits | None = None, *,
               producers: bool = True,
               lease_clock: Callable[[], float] | None = None) -> Starlette:
    """Build the ASGI app for ``settings``; nothing runs until the lifespan starts.
    ``producers=False`` serves only what is stored and submitted (tests of the streaming
    layer feed the batcher themselves); ``lease_clock`` replaces the watch leases' clock
    (tests)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with run_services(settings, limits, producers=producers,
                                lease_clock=lease_clock) as services:
            app.state.services = services
            app.state.metrics_registry = services.metrics_registry
            logger.info("chainwire %s ready (network %s)", __version__, settings.network)
            yield
            logger.info("chainwire shutting down: flushing pending batches")
        app.state.services = None
        logger.info("chainwire stopped")

    routes: list[BaseRoute] = [
        Route("/", dashboard),
        Route("/healthz", healthz),
        Route("/events", events_endpoint),
        WebSocketRoute("/ws", ws_endpoint),
        Route("/ws", upgrade_required),  # the same path over plain HTTP: a typed 426
        Route("/metrics", metrics_endpoint),
        *api_routes(),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            # Outermost first: every answer gets the security headers; a foreign Host is
            # refused before anything else; CORS answers preflights and labels answers
            # (errors too) for allowed origins; then other origins, non-JSON writes, keys.
            Middleware(SecurityHeadersMiddleware, connect_origins=settings.cors_origins),
            Middleware(HostGuard, allowed_hosts=settings.effective_allowed_hosts),
            Middleware(TypedCORSMiddleware, allow_origins=settings.cors_origins),
            Middleware(OriginGuard, allowed_origins=settings.cors_origins),
            Middleware(JsonWritesMiddleware),
            Middleware(ApiKeyMiddleware, keys=settings.api_keys),
        ],
        exception_handlers={ApiError: api_error_handler, HTTPException: http_exception_handler,
                            StoreError: store_error_handler,
                            500: internal_error_handler},
    )
    # A trailing-slash redirect builds its Location from the request's Host: with any
    # host allowed that would echo whatever a client sent. Exact paths only (404 else).
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.services = None
    return app
