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
    connectors,
    contacts,
    dialplan,
    health,
    pages,
    pbxes,
    queues,
    recordings,
    softphone,
    tasks,
    voicemails,
    wallboard,
)

ROUTERS: list[APIRouter] = [
    health.router,
    dialplan.router,
    # The busiest reads next: a request's path is matched against the routes in this order.
    calls.router,
    auth.router,
    pbxes.router,
    connectors.router,
    api_users.router,
    analytics.router,
    queues.router,
    wallboard.router,
    recordings.router,
    tasks.router,
    voicemails.router,
    contacts.router,
    agent.router,
    agent_uploads.router,
    softphone.router,
    softphone.pages,
    pages.router,
]
