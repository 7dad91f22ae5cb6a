"""Every router the app serves; a feature adds its module here."""

from __future__ import annotations

from fastapi import APIRouter

from callbridge.web.routes import api_users, auth, health, pages

ROUTERS: list[APIRouter] = [
    health.router,
    auth.router,
    pages.router,
    api_users.router,
]
