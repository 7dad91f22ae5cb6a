"""PBX settings (admin) and the endpoints a PBX itself calls (webhooks, signed by the PBX)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from callbridge.domain.errors import CallbridgeError
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.hub import Hub
from callbridge.services.pbxes import AsteriskSettings, YeastarSettings, add_pbx, webhook_url
from callbridge.web.deps import AdminUser, HubDep, RepoDep
from callbridge.web.pages import flash, render
from callbridge.web.schemas import Page, Strict

router = APIRouter(tags=["pbxes"])


class PbxOut(BaseModel):
    name: str
    kind: PbxKind
    enabled: bool
    config: dict[str, Any]
    link_up: bool
    link_detail: str
    link_checked_at: datetime | None
    last_event_at: datetime | None
    webhook_url: str | None = Field(None, description="Paste into the Yeastar portal (Yeastar only).")

    @classmethod
    def of(cls, hub: Hub, record: PbxRecord) -> PbxOut:
        up, detail = record.link_up, record.link_detail
        if hub.links is not None and record.name in hub.links.links:
            live = hub.links.status(record.name)  # this process runs the link: fresher than the row
            up, detail = live.connected, live.detail
        elif not hub.runs_embedded_link(record):
            detail = detail or "served by an agent"
        return cls(
            name=record.name,
            kind=record.kind,
            enabled=record.enabled,
            config=record.config,
            link_up=up,
            link_detail=detail,
            link_checked_at=record.link_checked_at,
            last_event_at=record.last_event_at,
            webhook_url=webhook_url(hub.settings.public_url, record)
            if record.kind is PbxKind.YEASTAR
            else None,
        )


class PbxCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    kind: PbxKind
    host: str = Field("", max_length=253)
    port: int = 5038
    username: str = Field("", max_length=100)
    secret: str = Field("", max_length=500)
    trunks: list[str] = Field(default_factory=list, max_length=50)
    direction_variable: str = Field("CALLBRIDGE_DIRECTION", max_length=64)
    agent: bool = False
    base_url: str = Field("", max_length=500)
    client_id: str = Field("", max_length=200)
    client_secret: str = Field("", max_length=500)
    webhook_secret: str = Field("", max_length=500)
    events: Literal["webhook", "websocket"] = "webhook"
    timezone: str = Field("UTC", max_length=64)

    def settings(self) -> AsteriskSettings | YeastarSettings:
        if self.kind is PbxKind.ASTERISK:
            return AsteriskSettings(
                host=self.host,
                port=self.port,
                username=self.username,
                secret=self.secret,
                trunks=tuple(self.trunks),
                direction_variable=self.direction_variable,
                agent=self.agent,
            )
        return YeastarSettings(
            base_url=self.base_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            webhook_secret=self.webhook_secret,
            events=self.events,
            timezone=self.timezone,
        )


async def _create(hub: Hub, repos: Any, body: PbxCreate) -> PbxRecord:
    record = await add_pbx(repos.pbxes, body.name, body.kind, body.settings())
    await repos.commit()
    if hub.settings.start_pbx_links:
        await hub.start_link(record)
    return record


@router.get("/api/v1/pbxes")
async def list_pbxes(user: AdminUser, hub: HubDep, repos: RepoDep) -> Page[PbxOut]:
    return Page(items=[PbxOut.of(hub, r) for r in await repos.pbxes.all()])


@router.get("/api/v1/pbxes/{name}")
async def get_pbx(name: str, user: AdminUser, hub: HubDep, repos: RepoDep) -> PbxOut:
    return PbxOut.of(hub, await repos.pbxes.get(name))


@router.post("/api/v1/pbxes", status_code=201)
async def create_pbx(body: PbxCreate, user: AdminUser, hub: HubDep, repos: RepoDep) -> PbxOut:
    return PbxOut.of(hub, await _create(hub, repos, body))


@router.get("/settings/pbxes", include_in_schema=False)
async def pbxes_page(request: Request, user: AdminUser, hub: HubDep, repos: RepoDep) -> Response:
    items = [PbxOut.of(hub, r) for r in await repos.pbxes.all()]
    return render(request, "pbxes.html", pbxes=items)


@router.post("/settings/pbxes", include_in_schema=False)
async def create_pbx_form(
    request: Request,
    user: AdminUser,
    hub: HubDep,
    repos: RepoDep,
    kind: Annotated[PbxKind, Form()],
    name: Annotated[str, Form(max_length=64)] = "",
    host: Annotated[str, Form(max_length=253)] = "",
    port: Annotated[int, Form()] = 5038,
    username: Annotated[str, Form(max_length=100)] = "",
    secret: Annotated[str, Form(max_length=500)] = "",
    trunks: Annotated[str, Form(max_length=2000)] = "",
    base_url: Annotated[str, Form(max_length=500)] = "",
    client_id: Annotated[str, Form(max_length=200)] = "",
    client_secret: Annotated[str, Form(max_length=500)] = "",
    webhook_secret: Annotated[str, Form(max_length=500)] = "",
    events: Annotated[Literal["webhook", "websocket"], Form()] = "webhook",
) -> Response:
    body = PbxCreate(
        name=name or "-",
        kind=kind,
        host=host,
        port=port,
        username=username,
        secret=secret,
        trunks=[t for t in trunks.replace(",", " ").split() if t],
        base_url=base_url,
        client_id=client_id,
        client_secret=client_secret,
        webhook_secret=webhook_secret,
        events=events,
    )
    try:
        record = await _create(hub, repos, body)
    except CallbridgeError as exc:
        items = [PbxOut.of(hub, r) for r in await repos.pbxes.all()]
        return render(request, "pbxes.html", status_code=400, pbxes=items, error=exc.message, kind=kind.value)
    message = f"PBX {record.name} added."
    if record.kind is PbxKind.YEASTAR:
        message += (
            f" Paste this webhook URL into the Yeastar portal: {webhook_url(hub.settings.public_url, record)}"
        )
    flash(request, message)
    return RedirectResponse("/settings/pbxes", status_code=303)


# POST /webhooks/yeastar/{key} (what a PBX calls) is served ahead of the router: web/webhooks.py.
