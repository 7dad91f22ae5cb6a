"""Sign-in, sign-out and password change pages."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from callbridge.domain.errors import AuthenticationFailed, InvalidInput, RateLimited
from callbridge.domain.mail import validate_address
from callbridge.domain.times import time_zones
from callbridge.domain.users import User
from callbridge.hub import Hub
from callbridge.store.desk import SqlDesk
from callbridge.store.mail import MailPrefs
from callbridge.store.repos import Repos
from callbridge.web.deps import (
    AccountsDep,
    CurrentUser,
    HubDep,
    OptionalUser,
    RepoDep,
    check_csrf,
    client_address,
    get_hub,
)
from callbridge.web.errors import retry_after
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


# A browser that signed in as a user before carries a signed "known device" cookie naming that
# user and a random device id. Its wrong passwords are counted for that device alone, so guesses
# from elsewhere (or from behind the same NAT address) cannot lock the user out of it.
DEVICE_COOKIE = "callbridge_device"
DEVICE_MAX_AGE = 180 * 24 * 3600
DEVICE_USERS = 5  # users remembered per browser (a shared desk PC)


def _device_signer(request: Request) -> URLSafeTimedSerializer:
    hub = get_hub(request)
    return URLSafeTimedSerializer(hub.box.derive("known-device-cookie"), salt="known-device")


def _known_devices(request: Request) -> dict[str, str]:
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return {}
    try:
        value = _device_signer(request).loads(raw, max_age=DEVICE_MAX_AGE)
    except BadSignature:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _remember_device(request: Request, response: Response, name: str, known: dict[str, str]) -> None:
    devices = {k: v for k, v in known.items() if k != name}
    devices[name] = known.get(name) or secrets.token_urlsafe(16)
    devices = dict(list(devices.items())[-DEVICE_USERS:])
    response.set_cookie(
        DEVICE_COOKIE,
        _device_signer(request).dumps(devices),
        max_age=DEVICE_MAX_AGE,
        path="/login",
        httponly=True,
        samesite="lax",
        secure=get_hub(request).settings.secure_cookies,
    )


@router.post("/login", dependencies=[Depends(check_csrf)])
async def login(
    request: Request,
    accounts: AccountsDep,
    repos: RepoDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    known = _known_devices(request)
    name = username.strip().lower()
    try:
        user = await accounts.authenticate(username, password, client_address(request), known.get(name))
    except (AuthenticationFailed, RateLimited) as exc:
        await repos.commit()  # keep the failure count even though we answer with an error
        if isinstance(exc, RateLimited):
            page = render(
                request, "login.html", status_code=429, error=exc.message, username=username, next=next
            )
            page.headers["retry-after"] = retry_after(exc)
            return page
        return render(request, "login.html", status_code=401, error=exc.message, username=username, next=next)
    session_id = await accounts.start_session(user)
    await repos.commit()  # the browser's next request (the redirect) must find the session
    # A fresh session: nothing from before sign-in survives, the CSRF token included (a token
    # planted or read before sign-in must not be good for the signed-in session).
    request.session.clear()
    request.session.update(
        {"uid": user.id, "sv": user.session_version, "sid": session_id, "csrf": secrets.token_urlsafe(24)}
    )
    response = RedirectResponse(_safe_next(next), status_code=303)
    _remember_device(request, response, user.name.lower(), known)
    return response


@router.post("/logout")
async def logout(request: Request, user: CurrentUser, accounts: AccountsDep, repos: RepoDep) -> Response:
    session_id = request.session.get("sid")
    if isinstance(session_id, str):
        # Ended on the server: the cookie is refused from now on, even if someone kept a copy.
        await accounts.end_session(session_id)
        await repos.commit()
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def _account(
    request: Request, hub: Hub, repos: Repos, user: User, status_code: int = 200, **context: Any
) -> Response:
    return render(
        request,
        "account.html",
        status_code=status_code,
        zones=time_zones(),
        hub_zone=hub.settings.time_zone,
        now=datetime.now(UTC),
        alerts=await SqlDesk(repos.session).alerts(user.id),
        mail=await repos.mail.prefs(user.id),
        mail_on=bool(hub.settings.smtp_host),
        **context,
    )


@router.post("/account/email")
async def set_email_form(
    request: Request,
    user: CurrentUser,
    hub: HubDep,
    repos: RepoDep,
    email: Annotated[str, Form(max_length=254)] = "",
    daily_digest: Annotated[str, Form(max_length=10)] = "",
    new_voicemail: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    try:
        address = validate_address(email) if email.strip() else ""
        if daily_digest and not address:
            raise InvalidInput("the daily digest needs an e-mail address")
        if new_voicemail and not address:
            raise InvalidInput("an e-mail for new voicemail needs an e-mail address")
    except InvalidInput as exc:
        return await _account(request, hub, repos, user, status_code=400, mail_error=exc.message)
    await repos.mail.set_prefs(user.id, MailPrefs(address, bool(daily_digest), bool(new_voicemail)))
    flash(request, "Your e-mail settings were saved.")
    return RedirectResponse("/account", status_code=303)


@router.get("/account")
async def account_page(request: Request, user: CurrentUser, hub: HubDep, repos: RepoDep) -> Response:
    return await _account(request, hub, repos, user)


@router.post("/account/time-zone")
async def set_time_zone_form(
    request: Request,
    user: CurrentUser,
    accounts: AccountsDep,
    hub: HubDep,
    repos: RepoDep,
    time_zone: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    try:
        updated = await accounts.set_time_zone(user, time_zone)
    except InvalidInput as exc:
        return await _account(request, hub, repos, user, status_code=400, zone_error=exc.message)
    shown = updated.zone_or(hub.settings.time_zone)
    flash(request, f"Times are now shown in {shown}.")
    return RedirectResponse("/account", status_code=303)


@router.post("/account/password")
async def change_password(
    request: Request,
    user: CurrentUser,
    accounts: AccountsDep,
    repos: RepoDep,
    hub: HubDep,
    current: Annotated[str, Form(max_length=1000)] = "",
    new: Annotated[str, Form(max_length=1000)] = "",
    repeat: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        if new != repeat:
            raise InvalidInput("the two new passwords differ")
        await accounts.change_password(user, current, new)
    except RateLimited as exc:
        page = await _account(request, hub, repos, user, status_code=429, error=exc.message)
        page.headers["retry-after"] = retry_after(exc)
        return page
    except (AuthenticationFailed, InvalidInput) as exc:
        await repos.commit()  # a wrong current password counts towards the throttle
        return await _account(request, hub, repos, user, status_code=400, error=exc.message)
    session_id = request.session.get("sid")
    await accounts.end_other_sessions(user, session_id if isinstance(session_id, str) else None)
    await repos.commit()
    fresh = await accounts.user_for_session(
        user.id, user.session_version + 1, session_id if isinstance(session_id, str) else ""
    )
    request.session.update({"sv": fresh.session_version if fresh else 0})
    flash(request, "Your password was changed.")
    return RedirectResponse("/account", status_code=303)
