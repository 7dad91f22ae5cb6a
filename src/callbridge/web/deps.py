"""Request-scoped dependencies: the unit of work, the signed-in user, CSRF, roles."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from callbridge.domain.errors import AuthenticationFailed, Forbidden
from callbridge.domain.users import Role, User
from callbridge.hub import Hub
from callbridge.services.accounts import Accounts
from callbridge.store.repos import Repos

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


# Dependencies are ``async def`` even when they never wait: FastAPI runs a plain ``def``
# dependency in a worker thread, a thread hop (and a GIL handoff) per dependency per request.
async def hub_dep(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def get_repos(request: Request) -> AsyncIterator[Repos]:
    """The request's unit of work. It commits when the route function returns, before the answer
    is sent (``scope="function"``): a commit the database refuses raises ``StoreUnavailable``,
    answered 503 with Retry-After, so a client never gets a 2xx for a change that was not stored.
    (With the default scope FastAPI sends the answer first and commits after.)"""
    async with get_hub(request).db.request_unit() as repos:
        yield repos


RepoDep = Annotated[Repos, Depends(get_repos, scope="function")]
HubDep = Annotated[Hub, Depends(hub_dep)]


async def get_accounts(hub: HubDep, repos: RepoDep) -> Accounts:
    return hub.accounts(repos)


AccountsDep = Annotated[Accounts, Depends(get_accounts)]


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


async def check_csrf(request: Request) -> None:
    """Cookie-authenticated changes must carry the session's CSRF token (header or form field)."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf")
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not given or not hmac.compare_digest(expected, given):
        raise Forbidden("the form has expired or did not come from this site; reload the page and try again")


async def _signed_in(request: Request, accounts: Accounts) -> User | None:
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationFailed("use 'Authorization: Bearer <token>'")
        user = await accounts.user_for_token(value.strip())
        request.state.user = user
        return user
    user_id = request.session.get("uid")
    version = request.session.get("sv")
    session_id = request.session.get("sid")
    if not isinstance(user_id, int) or not isinstance(version, int) or not isinstance(session_id, str):
        return None
    found = await accounts.user_for_session(user_id, version, session_id)
    if found is None:
        for key in ("uid", "sv", "sid"):
            request.session.pop(key, None)
        return None
    await check_csrf(request)
    request.state.user = found
    return found


async def optional_user(request: Request, accounts: AccountsDep) -> User | None:
    return await _signed_in(request, accounts)


OptionalUser = Annotated[User | None, Depends(optional_user)]


# Not through ``optional_user``: every authenticated request solves this, and a dependency
# less is a few percent of a short request's CPU.
async def current_user(request: Request, accounts: AccountsDep) -> User:
    user = await _signed_in(request, accounts)
    if user is None:
        raise AuthenticationFailed("sign in first")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_role(*roles: Role) -> Callable[[User], Awaitable[User]]:
    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden("your role does not allow this")
        return user

    return check


AdminUser = Annotated[User, Depends(require_role(Role.ADMIN))]
ManagerUser = Annotated[User, Depends(require_role(Role.ADMIN, Role.MANAGER))]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
