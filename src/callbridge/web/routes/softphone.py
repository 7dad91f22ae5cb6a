"""The softphone's API: an admin sets a user's SIP account; the user's page reads it without the
secret, and the one tab that registers fetches the secret once, with a short-lived nonce."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from callbridge.domain.errors import Forbidden, InvalidInput, NotFound
from callbridge.domain.users import User
from callbridge.store.repos import Repos
from callbridge.store.softphones import IceServer, Softphone
from callbridge.store.tables import now
from callbridge.web.deps import AdminUser, CurrentUser, RepoDep
from callbridge.web.errors import validation_sentence
from callbridge.web.pages import flash, render

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["softphone"])

NONCE_SECONDS = 30
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")

Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class IceServerIo(BaseModel):
    """One STUN or TURN server, as the browser's ``RTCPeerConnection`` takes it."""

    model_config = ConfigDict(extra="forbid")
    urls: list[Url] = Field(min_length=1, max_length=8, description="stun:, stuns:, turn: or turns: URLs.")
    username: str = Field("", max_length=200, description="TURN only.")
    credential: str = Field("", max_length=500, description="TURN only; stored encrypted.")

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> IceServerIo:
        for url in self.urls:
            if not url.lower().startswith(ICE_SCHEMES) or any(c.isspace() for c in url):
                raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL")
        turn = any(u.lower().startswith(("turn:", "turns:")) for u in self.urls)
        if turn and (not self.username or not self.credential):
            raise ValueError("a TURN server needs a username and a credential")
        if not turn and (self.username or self.credential):
            raise ValueError("a STUN server takes no username or credential")
        return self


class SoftphoneIn(BaseModel):
    """A user's SIP account for the phone in the browser."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    ws_url: Url = Field(description="The PBX's SIP-over-WebSocket URL: wss://…, or ws:// on localhost only.")
    sip_uri: Annotated[str, StringConstraints(strip_whitespace=True, min_length=5, max_length=300)] = Field(
        description="The user's SIP address (sip:1001@pbx.example.com)."
    )
    auth_user: str = Field(
        "", max_length=128, description="The user name to authenticate with; the SIP URI's user when empty."
    )
    secret: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="The SIP password. Required the first time; left out, the stored one is kept.",
    )
    ice_servers: list[IceServerIo] = Field(default_factory=list, max_length=8)

    @field_validator("ws_url")
    @classmethod
    def _ws(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("the WebSocket URL starts with wss:// (or ws:// on localhost)")
        if parts.scheme == "ws" and parts.hostname not in LOCAL_HOSTS:
            raise ValueError("an unencrypted ws:// URL is only allowed on localhost; use wss://")
        return value

    @field_validator("sip_uri")
    @classmethod
    def _sip(cls, value: str) -> str:
        scheme, _, rest = value.partition(":")
        user, at, host = rest.partition("@")
        if scheme.lower() not in ("sip", "sips") or not at or not user or not host:
            raise ValueError("the SIP URI looks like sip:1001@pbx.example.com")
        if any(c.isspace() or c in "<>\"'" for c in value):
            raise ValueError("the SIP URI holds no spaces, quotes or angle brackets")
        return value

    @field_validator("auth_user")
    @classmethod
    def _auth(cls, value: str) -> str:
        value = value.strip()
        if any(c.isspace() for c in value):
            raise ValueError("the auth user holds no spaces")
        return value


class SoftphoneOut(BaseModel):
    """What your page needs to register (never the SIP secret)."""

    enabled: bool
    ws_url: str
    sip_uri: str
    auth_user: str
    ice_servers: list[dict[str, Any]]

    @classmethod
    def of(cls, phone: Softphone | None) -> SoftphoneOut:
        if phone is None:
            return cls(enabled=False, ws_url="", sip_uri="", auth_user="", ice_servers=[])
        return cls(
            enabled=phone.enabled,
            ws_url=phone.ws_url,
            sip_uri=phone.sip_uri,
            auth_user=phone.auth_user,
            ice_servers=[s.to_dict() for s in phone.ice_servers],
        )


class SoftphoneAdminOut(SoftphoneOut):
    user: str
    has_secret: bool = Field(description="Whether a SIP secret is stored (it is never shown).")


class NonceOut(BaseModel):
    nonce: str
    expires_in: int = Field(description="Seconds the nonce is good for; it works once.")


class CredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nonce: str = Field(min_length=1, max_length=100)


class CredentialOut(BaseModel):
    auth_user: str
    secret: str


def _admin_out(name: str, phone: Softphone) -> SoftphoneAdminOut:
    return SoftphoneAdminOut(**SoftphoneOut.of(phone).model_dump(), user=name, has_secret=phone.has_secret)


async def _set_softphone(repos: Repos, name: str, body: SoftphoneIn, by: User) -> SoftphoneAdminOut:
    target = await repos.users.get_by_name(name)
    if target is None:
        raise NotFound(f"no user named {name!r}")
    existing = await repos.softphones.get(target.user.id)
    if body.secret is None and (existing is None or not existing.has_secret):
        raise InvalidInput("give the SIP secret (the user's SIP password) the first time")
    auth_user = body.auth_user or body.sip_uri.partition(":")[2].partition("@")[0]
    phone = await repos.softphones.put(
        target.user.id,
        enabled=body.enabled,
        ws_url=body.ws_url,
        sip_uri=body.sip_uri,
        auth_user=auth_user,
        ice_servers=[IceServer(tuple(s.urls), s.username, s.credential) for s in body.ice_servers],
        secret=body.secret,
    )
    log.info("softphone of user %s set by %s (ws %s)", name, by.name, body.ws_url)
    return _admin_out(name, phone)


@router.put("/users/{name}/softphone", operation_id="set_user_softphone")
async def set_user_softphone(
    name: str, body: SoftphoneIn, user: AdminUser, repos: RepoDep
) -> SoftphoneAdminOut:
    """Set a user's softphone (admin). The secret and TURN credentials are stored encrypted and
    never answered; a PUT without ``secret`` keeps the stored one."""
    return await _set_softphone(repos, name, body, user)


@router.get("/users/{name}/softphone", operation_id="get_user_softphone")
async def get_user_softphone(name: str, user: AdminUser, repos: RepoDep) -> SoftphoneAdminOut:
    target = await repos.users.get_by_name(name)
    phone = await repos.softphones.get(target.user.id) if target is not None else None
    if target is None or phone is None:
        raise NotFound(f"user {name!r} has no softphone")
    return _admin_out(name, phone)


async def _delete_softphone(repos: Repos, name: str) -> None:
    target = await repos.users.get_by_name(name)
    if target is None or not await repos.softphones.delete(target.user.id):
        raise NotFound(f"user {name!r} has no softphone")


@router.delete("/users/{name}/softphone", operation_id="delete_user_softphone", status_code=204)
async def delete_user_softphone(name: str, user: AdminUser, repos: RepoDep) -> Response:
    await _delete_softphone(repos, name)
    return Response(status_code=204)


@router.get("/me/softphone", operation_id="get_my_softphone")
async def get_my_softphone(user: CurrentUser, repos: RepoDep) -> SoftphoneOut:
    """Your softphone's settings, without the secret (``enabled`` false when you have none)."""
    return SoftphoneOut.of(await repos.softphones.get(user.id))


def _browser_only(request: Request) -> None:
    # The secret goes to a signed-in page (session cookie, CSRF-checked), never to an API token.
    if request.headers.get("authorization"):
        raise Forbidden("the SIP secret is only given to your own signed-in page, not to an API token")


@router.post("/me/softphone/nonce", operation_id="start_softphone_credential")
async def start_softphone_credential(request: Request, user: CurrentUser, repos: RepoDep) -> NonceOut:
    """Step one of the registering tab's secret fetch: a nonce good once, for 30 s."""
    _browser_only(request)
    nonce = secrets.token_urlsafe(24)
    if not await repos.softphones.set_nonce(user.id, nonce, now() + timedelta(seconds=NONCE_SECONDS)):
        raise NotFound("you have no softphone; an administrator sets one up for you")
    return NonceOut(nonce=nonce, expires_in=NONCE_SECONDS)


@router.post("/me/softphone/credential", operation_id="take_softphone_credential")
async def take_softphone_credential(
    request: Request, body: CredentialIn, user: CurrentUser, repos: RepoDep
) -> CredentialOut:
    """Step two: the SIP secret, once per nonce (a used, expired or replaced nonce is refused)."""
    _browser_only(request)
    phone = await repos.softphones.get(user.id)
    secret = await repos.softphones.take_secret(user.id, body.nonce, now())
    if phone is None or secret is None:
        raise Forbidden("this credential nonce is used up or expired; ask for a new one")
    return CredentialOut(auth_user=phone.auth_user, secret=secret)


# -- Settings → Softphones (the admin's page over the same rules) ----------------------------------

pages = APIRouter(include_in_schema=False)


async def _page(request: Request, repos: Repos, *, status_code: int = 200, error: str = "") -> Response:
    users = await repos.users.all()
    phones = await repos.softphones.all()
    return render(
        request,
        "softphones.html",
        status_code=status_code,
        rows=[(u, phones.get(u.id)) for u in users],
        error=error,
    )


@pages.get("/settings/softphones")
async def softphones_page(request: Request, user: AdminUser, repos: RepoDep) -> Response:
    return await _page(request, repos)


@pages.post("/settings/softphones")
async def set_softphone_form(
    request: Request,
    user: AdminUser,
    repos: RepoDep,
    name: Annotated[str, Form(max_length=64)] = "",
    ws_url: Annotated[str, Form(max_length=500)] = "",
    sip_uri: Annotated[str, Form(max_length=300)] = "",
    auth_user: Annotated[str, Form(max_length=128)] = "",
    secret: Annotated[str, Form(max_length=256)] = "",
    enabled: Annotated[str, Form(max_length=5)] = "",
    stun: Annotated[str, Form(max_length=500)] = "",
    turn: Annotated[str, Form(max_length=500)] = "",
    turn_username: Annotated[str, Form(max_length=200)] = "",
    turn_credential: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """The form's fields, checked by the same rules as ``PUT /api/v1/users/{name}/softphone``; a
    refusal is shown on the page in words. An empty secret keeps the stored one."""
    servers: list[dict[str, Any]] = []
    if stun.strip():
        servers.append({"urls": stun.split()})
    if turn.strip() or turn_username or turn_credential:
        servers.append({"urls": turn.split(), "username": turn_username, "credential": turn_credential})
    try:
        body = SoftphoneIn.model_validate(
            {
                "enabled": enabled == "true",
                "ws_url": ws_url,
                "sip_uri": sip_uri,
                "auth_user": auth_user,
                "secret": secret or None,
                "ice_servers": servers,
            }
        )
        await _set_softphone(repos, name, body, user)
    except ValidationError as exc:
        return await _page(request, repos, status_code=400, error=validation_sentence(dict(exc.errors()[0])))
    except (InvalidInput, NotFound) as exc:
        return await _page(request, repos, status_code=400, error=exc.message)
    flash(request, f"Softphone of {name} saved.")
    return RedirectResponse("/settings/softphones", status_code=303)


@pages.post("/settings/softphones/{name}/delete")
async def delete_softphone_form(request: Request, name: str, user: AdminUser, repos: RepoDep) -> Response:
    await _delete_softphone(repos, name)
    flash(request, f"Softphone of {name} removed.")
    return RedirectResponse("/settings/softphones", status_code=303)
