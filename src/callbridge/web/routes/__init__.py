"""Every router the app serves; a feature adds its module here."""

from __future__ import annotations

from fastapi import APIRouter

from callbridge.web.routes import (
    agent,
    agent_uploads,
    analytics,
    api_users,
    auth,
    calls,
    contacts,
    dialplan,
    health,
    pages,
    pbxes,
    recordings,
)

ROUTERS: list[APIRouter] = [
    health.router,
    dialplan.router,
    auth.router,
    pbxes.router,
    api_users.router,
    calls.router,
    analytics.router,
    recordings.router,
    contacts.router,
    agent.router,
    agent_uploads.router,
    pages.router,
]
