"""The FastAPI application: wiring only; routes live in ``web/routes``."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

import callbridge
from callbridge.config import Settings
from callbridge.hub import Hub
from callbridge.web import errors, live
from callbridge.web.middleware import BodyLimit, SecurityHeaders
from callbridge.web.routes import ROUTERS

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent


def create_app(settings: Settings | None = None, *, hub: Hub | None = None) -> FastAPI:
    settings = settings or (hub.settings if hub else Settings())
    the_hub = hub or Hub.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await the_hub.prepare()
        if the_hub.settings.start_pbx_links:
            await the_hub.start_links()
        for start in app.state.on_start:
            await start(the_hub)
        # What exists now (modules, tables, routes…) lives as long as the process: keep it out
        # of the collector's full passes, which would otherwise walk it all and stall the event
        # loop (ingest, live sockets) for tens of milliseconds each time.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            for stop in reversed(app.state.on_stop):
                await stop(the_hub)
            await the_hub.close()

    app = FastAPI(
        title="callbridge",
        version=callbridge.__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # the stock docs page loads scripts from a CDN; the hub works offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.hub = the_hub
    app.state.on_start = []
    app.state.on_stop = []
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals["version"] = callbridge.__version__
    app.state.templates = templates
    errors.install(app)
    app.add_middleware(
        SessionMiddleware,
        secret_key=the_hub.box.derive("session-cookie"),
        session_cookie="callbridge_session",
        max_age=settings.session_max_age_seconds,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    for router in ROUTERS:
        app.include_router(router)
    live.install(app)
    return app
