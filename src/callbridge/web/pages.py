"""Rendering helpers shared by every page."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from callbridge.web.deps import csrf_token

NAV = [("Desk", "/desk"), ("Calls", "/calls"), ("Contacts", "/contacts"), ("Settings", "/settings")]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    templates = request.app.state.templates
    context.setdefault("user", getattr(request.state, "user", None))
    context.setdefault("flash", request.session.pop("flash", None))
    response: HTMLResponse = templates.TemplateResponse(
        request,
        template,
        {"csrf": csrf_token(request), "nav": NAV, "path": request.url.path, **context},
        status_code=status_code,
    )
    response.headers["cache-control"] = "no-store"
    return response


def flash(request: Request, message: str) -> None:
    request.session["flash"] = message
