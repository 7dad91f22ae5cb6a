"""Rendering helpers shared by every page."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from callbridge.domain.users import User
from callbridge.web.deps import csrf_token

NAV = [
    ("Desk", "/desk"),
    ("Calls", "/calls"),
    ("Contacts", "/contacts"),
    ("Voicemail", "/voicemails"),
    ("Analytics", "/analytics"),
    ("Settings", "/settings"),
]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    templates = request.app.state.templates
    context.setdefault("user", getattr(request.state, "user", None))
    context.setdefault("flash", request.session.pop("flash", None))
    context.setdefault("time_zone", viewer_zone(request, context["user"]))
    response: HTMLResponse = templates.TemplateResponse(
        request,
        template,
        {"csrf": csrf_token(request), "nav": NAV, "path": request.url.path, **context},
        status_code=status_code,
    )
    response.headers["cache-control"] = "no-store"
    return response


def viewer_zone(request: Request, user: User | None) -> str:
    """The zone a page shows times in: the user's own, else the hub's CALLBRIDGE_TIME_ZONE."""
    default: str = request.app.state.hub.settings.time_zone
    return user.zone_or(default) if user is not None else default


def flash(request: Request, message: str) -> None:
    request.session["flash"] = message
