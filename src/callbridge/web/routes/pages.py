"""The app shell and the pages that later features fill."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from callbridge.domain.errors import Conflict, InvalidInput
from callbridge.domain.users import parse_role
from callbridge.web.deps import AccountsDep, AdminUser, CurrentUser, RepoDep
from callbridge.web.pages import flash, render
from callbridge.web.schemas import Id

router = APIRouter(include_in_schema=False)
_FAVICON = Path(__file__).resolve().parents[1] / "static" / "favicon.svg"


@router.get("/")
async def home(user: CurrentUser) -> Response:
    """After sign-in everyone lands on the Desk: their calls as they ring, presence, missed calls."""
    return RedirectResponse("/desk", status_code=303)


@router.get("/api/docs")
async def api_docs(request: Request) -> Response:
    """The API reference (Swagger UI, vendored) over /api/v1/openapi.json; public like the document."""
    return render(request, "api_docs.html")


@router.get("/favicon.ico")
async def favicon() -> Response:
    return FileResponse(_FAVICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"})


@router.get("/settings")
async def settings_page(request: Request, user: CurrentUser, repos: RepoDep) -> Response:
    tokens = await repos.tokens.for_user(user.id)
    return render(request, "settings.html", tokens=tokens)


@router.get("/settings/users")
async def users_page(request: Request, user: AdminUser, repos: RepoDep) -> Response:
    return render(request, "users.html", users=await repos.users.all())


@router.post("/settings/users")
async def create_user_form(
    request: Request,
    user: AdminUser,
    accounts: AccountsDep,
    repos: RepoDep,
    name: Annotated[str, Form(max_length=64)] = "",
    role: Annotated[str, Form(max_length=16)] = "agent",
    display_name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        created, password = await accounts.create_user(name, parse_role(role), None, display_name)
    except (InvalidInput, Conflict) as exc:
        return render(
            request, "users.html", status_code=400, users=await repos.users.all(), error=exc.message
        )
    flash(request, f"User {created.name} created. Their password, shown once: {password}")
    return RedirectResponse("/settings/users", status_code=303)


@router.post("/settings/users/{name}/active")
async def set_user_active_form(
    name: str,
    user: AdminUser,
    accounts: AccountsDep,
    request: Request,
    active: Annotated[str, Form(max_length=5)] = "false",
) -> Response:
    if name == user.name:
        raise InvalidInput("you cannot disable your own account")
    changed = await accounts.set_active(name, active == "true")
    flash(request, f"User {changed.name} {'enabled' if active == 'true' else 'disabled'}.")
    return RedirectResponse("/settings/users", status_code=303)


@router.post("/settings/users/{name}/role")
async def set_user_role_form(
    name: str,
    user: AdminUser,
    accounts: AccountsDep,
    repos: RepoDep,
    request: Request,
    role: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    try:
        changed = await accounts.set_role(name, parse_role(role))
    except (InvalidInput, Conflict) as exc:
        return render(
            request, "users.html", status_code=400, users=await repos.users.all(), error=exc.message
        )
    flash(request, f"User {changed.name} is now {changed.role.value}.")
    return RedirectResponse("/settings/users", status_code=303)


@router.post("/settings/users/{name}/password")
async def reset_user_password_form(
    name: str, user: AdminUser, accounts: AccountsDep, request: Request
) -> Response:
    """A new generated password for ``name``, shown once; their open sessions end."""
    if name.strip().lower() == user.name.lower():
        # Resetting one's own would sign this browser out with a password shown once in it.
        raise InvalidInput("change your own password on the Account page")
    changed, password = await accounts.reset_password(name)
    flash(request, f"New password for {changed.name}, shown once: {password}")
    return RedirectResponse("/settings/users", status_code=303)


@router.post("/settings/tokens")
async def create_token_form(
    request: Request,
    user: CurrentUser,
    accounts: AccountsDep,
    name: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    _, secret = await accounts.create_token(user, name or "token")
    flash(request, f"New API token, shown once: {secret}")
    return RedirectResponse("/settings", status_code=303)


@router.post("/settings/tokens/{token_id}/revoke")
async def revoke_token_form(
    request: Request, token_id: Id, user: CurrentUser, accounts: AccountsDep
) -> Response:
    await accounts.revoke_token(user, token_id)
    flash(request, "Token revoked.")
    return RedirectResponse("/settings", status_code=303)
