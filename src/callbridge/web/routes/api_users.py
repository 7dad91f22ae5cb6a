"""JSON API: the signed-in user, users (admin) and personal API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from callbridge.domain.errors import AuthenticationFailed
from callbridge.web.deps import AccountsDep, AdminUser, CurrentUser, HubDep, RepoDep
from callbridge.web.schemas import (
    Id,
    MeOut,
    MeUpdate,
    Page,
    PasswordChange,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserCreated,
    UserOut,
    UserUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["users"])


@router.get("/me")
async def me(user: CurrentUser, hub: HubDep) -> MeOut:
    """You, with the time zone your pages show times in (the API itself always speaks UTC)."""
    return MeOut.mine(user, hub.settings.time_zone)


@router.patch("/me")
async def update_me(body: MeUpdate, user: CurrentUser, accounts: AccountsDep, hub: HubDep) -> MeOut:
    """Set your time zone (an IANA name); an empty string or null follows the hub's default."""
    updated = await accounts.set_time_zone(user, body.time_zone)
    return MeOut.mine(updated, hub.settings.time_zone)


@router.post("/me/password", status_code=204)
async def change_password(
    body: PasswordChange, user: CurrentUser, accounts: AccountsDep, repos: RepoDep
) -> Response:
    try:
        await accounts.change_password(user, body.current, body.new)
    except AuthenticationFailed:
        await repos.commit()  # a wrong current password counts towards the throttle
        raise
    return Response(status_code=204)


@router.get("/users")
async def list_users(user: AdminUser, repos: RepoDep) -> Page[UserOut]:
    return Page(items=[UserOut.of(u) for u in await repos.users.all()])


@router.post("/users", status_code=201)
async def create_user(body: UserCreate, user: AdminUser, accounts: AccountsDep) -> UserCreated:
    created, password = await accounts.create_user(body.name, body.role, body.password, body.display_name)
    return UserCreated(user=UserOut.of(created), password=password)


@router.patch("/users/{name}")
async def update_user(name: str, body: UserUpdate, user: AdminUser, accounts: AccountsDep) -> UserOut:
    if body.role is not None:
        await accounts.set_role(name, body.role)
    if body.active is not None:
        await accounts.set_active(name, body.active)
    return UserOut.of(await accounts.get_user(name))


@router.get("/tokens")
async def list_tokens(user: CurrentUser, accounts: AccountsDep) -> Page[TokenOut]:
    return Page(items=[TokenOut.of(t) for t in await accounts.list_tokens(user)])


@router.post("/tokens", status_code=201)
async def create_token(body: TokenCreate, user: CurrentUser, accounts: AccountsDep) -> TokenCreated:
    token, secret = await accounts.create_token(user, body.name)
    return TokenCreated(token=TokenOut.of(token), secret=secret)


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: Id, user: CurrentUser, accounts: AccountsDep) -> Response:
    await accounts.revoke_token(user, token_id)
    return Response(status_code=204)
