"""The FastAPI application: wiring only; routes live in ``web/routes``."""

from __future__ import annotations

import gc
import logging
import sys
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
from callbridge.web import errors, filters, live
from callbridge.web.middleware import BodyLimit, NulRefused, SecurityHeaders
from callbridge.web.routes import ROUTERS
from callbridge.web.routes.contacts import IMPORT_FORM_ALLOWANCE, IMPORT_PATHS, import_too_large
from callbridge.web.webhooks import CallbridgeApp, YeastarWebhooks

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
SWITCH_INTERVAL = 0.0005  # seconds; see the lifespan


def create_app(settings: Settings | None = None, *, hub: Hub | None = None) -> FastAPI:
    settings = settings or (hub.settings if hub else Settings())
    the_hub = hub or Hub.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await the_hub.prepare()
        the_hub.start_recordings()
        the_hub.start_connectors()
        if the_hub.settings.start_pbx_links:
            await the_hub.start_links()
        for start in app.state.on_start:
            await start(the_hub)
        # What start-up built (modules, routes, SQLAlchemy's metadata, templates) lives as long
        # as the process; frozen, it is left out of the collector's full passes, which otherwise
        # walk all of it and stop every request for 150+ ms (a webhook ack, a screen pop among them).
        gc.collect()
        gc.freeze()
        # SQLite (aiosqlite, the webhook inbox) answers from threads; with the default 5 ms switch
        # interval each answer could wait that long for the GIL behind a busy event loop.
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            yield
        finally:
            for stop in reversed(app.state.on_stop):
                await stop(the_hub)
            await the_hub.close()
            gc.unfreeze()  # an app started again in this process (tests) must not pile frozen objects up

    app = CallbridgeApp(
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
    filters.install(templates.env, settings.default_region, settings.time_zone)
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
    # Answered ahead of all of the app's middleware (a PBX calls it; see web/webhooks.py).
    app.pbx_webhooks = YeastarWebhooks(the_hub, settings.max_body_bytes)
    app.body_timeout = settings.body_timeout_seconds
    app.add_middleware(NulRefused)
    app.add_middleware(SecurityHeaders)
    # A contacts file may be far larger than any other request: its upload paths have their own
    # limit (the file plus room for the form around it); the route checks the file itself.
    upload_limit = settings.max_import_bytes + IMPORT_FORM_ALLOWANCE
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        limits={path: upload_limit for path in IMPORT_PATHS},
        messages={path: import_too_large(settings.max_import_bytes) for path in IMPORT_PATHS},
    )
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    for router in ROUTERS:
        app.include_router(router)
    live.install(app)
    return app
