"""Sign-in, sign-out and password change pages."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from callbridge.domain.errors import AuthenticationFailed, InvalidInput, RateLimited
from callbridge.store.desk import SqlDesk
from callbridge.web.deps import AccountsDep, CurrentUser, OptionalUser, RepoDep, check_csrf, client_address
from callbridge.web.pages import flash, render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # Only local paths: never an open redirect to another site.
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/"
    return target


@router.get("/login")
async def login_page(request: Request, user: OptionalUser, next: str | None = None) -> Response:
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", next=_safe_next(next))


@router.post("/login", dependencies=[Depends(check_csrf)])
async def login(
    request: Request,
    accounts: AccountsDep,
    repos: RepoDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    try:
        user = await accounts.authenticate(username, password, client_address(request))
    except (AuthenticationFailed, RateLimited) as exc:
        await repos.commit()  # keep the failure count even though we answer with an error
        status = 429 if isinstance(exc, RateLimited) else 401
        return render(
            request, "login.html", status_code=status, error=exc.message, username=username, next=next
        )
    csrf = request.session.get("csrf")
    request.session.clear()
    request.session.update({"uid": user.id, "sv": user.session_version, "csrf": csrf})
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
async def logout(request: Request, user: CurrentUser) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/account")
async def account_page(request: Request, user: CurrentUser, repos: RepoDep) -> Response:
    return render(request, "account.html", alerts=await SqlDesk(repos.session).alerts(user.id))


@router.post("/account/password")
async def change_password(
    request: Request,
    user: CurrentUser,
    accounts: AccountsDep,
    repos: RepoDep,
    current: Annotated[str, Form(max_length=1000)] = "",
    new: Annotated[str, Form(max_length=1000)] = "",
    repeat: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        if new != repeat:
            raise InvalidInput("the two new passwords differ")
        await accounts.change_password(user, current, new)
    except (AuthenticationFailed, InvalidInput) as exc:
        alerts = await SqlDesk(repos.session).alerts(user.id)
        return render(request, "account.html", status_code=400, error=exc.message, alerts=alerts)
    await repos.commit()
    fresh = await accounts.user_for_session(user.id, user.session_version + 1)
    request.session.update({"sv": fresh.session_version if fresh else 0})
    flash(request, "Your password was changed.")
    return RedirectResponse("/account", status_code=303)
