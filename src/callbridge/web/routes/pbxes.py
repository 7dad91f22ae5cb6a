"""PBX settings (admin) and the endpoints a PBX itself calls (webhooks, signed by the PBX)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from callbridge.domain.errors import CallbridgeError
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.hub import Hub
from callbridge.services.pbxes import (
    AsteriskSettings,
    PbxChanges,
    YeastarSettings,
    add_pbx,
    edit_pbx,
    parse_queue_numbers,
    webhook_url,
)
from callbridge.web.deps import AdminUser, HubDep, RepoDep
from callbridge.web.pages import flash, render
from callbridge.web.schemas import Page, Strict

log = logging.getLogger(__name__)
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
    recordings_dir: str = Field("", max_length=500)
    base_url: str = Field("", max_length=500)
    client_id: str = Field("", max_length=200)
    client_secret: str = Field("", max_length=500)
    webhook_secret: str = Field("", max_length=500)
    events: Literal["webhook", "websocket"] = "webhook"
    timezone: str = Field("UTC", max_length=64)
    queues: dict[str, str] = Field(
        default_factory=dict,
        max_length=200,
        description="Yeastar: the PBX's queue numbers, each with a name (or '' to use the number).",
    )

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
                recordings_dir=self.recordings_dir,
            )
        return YeastarSettings(
            base_url=self.base_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            webhook_secret=self.webhook_secret,
            events=self.events,
            timezone=self.timezone,
            queues=self.queues,
        )


class PbxEdit(Strict):
    """Only the fields given change. Secrets are replaced only when given and not empty."""

    enabled: bool | None = None
    host: str | None = Field(None, max_length=253)
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = Field(None, max_length=100)
    secret: str | None = Field(None, max_length=500)
    trunks: list[str] | None = Field(None, max_length=50)
    direction_variable: str | None = Field(None, max_length=64)
    agent: bool | None = None
    recordings_dir: str | None = Field(None, max_length=500)
    base_url: str | None = Field(None, max_length=500)
    client_id: str | None = Field(None, max_length=200)
    client_secret: str | None = Field(None, max_length=500)
    webhook_secret: str | None = Field(None, max_length=500)
    events: Literal["webhook", "websocket"] | None = None
    timezone: str | None = Field(None, max_length=64)
    queues: dict[str, str] | None = Field(
        None, max_length=200, description="Yeastar: replaces the list of queue numbers ({} for none)."
    )

    def changes(self) -> PbxChanges:
        values = self.model_dump(exclude_none=True)
        if "trunks" in values:
            values["trunks"] = tuple(values["trunks"])
        return PbxChanges(**values)


async def _links_changed(hub: Hub, repos: Any, name: str) -> None:
    await repos.commit()
    if hub.settings.start_pbx_links:
        await hub.refresh_links()
        return
    # A hub that runs no embedded links still holds the sockets of agents that dialled in.
    record = await repos.pbxes.find(name)
    if record is None or not record.enabled:
        await hub.stop_link(name, "its PBX was removed" if record is None else "its PBX is disabled")


async def _create(hub: Hub, repos: Any, body: PbxCreate) -> PbxRecord:
    record = await add_pbx(repos.pbxes, body.name, body.kind, body.settings())
    await _links_changed(hub, repos, record.name)
    return record


async def _edit(hub: Hub, repos: Any, name: str, changes: PbxChanges) -> PbxRecord:
    record = await edit_pbx(repos.pbxes, name, changes)
    await _links_changed(hub, repos, name)
    return record


async def _remove(hub: Hub, repos: Any, name: str) -> None:
    await repos.pbxes.remove(name)
    await _links_changed(hub, repos, name)


@router.get("/api/v1/pbxes")
async def list_pbxes(user: AdminUser, hub: HubDep, repos: RepoDep) -> Page[PbxOut]:
    return Page(items=[PbxOut.of(hub, r) for r in await repos.pbxes.all()])


@router.get("/api/v1/pbxes/{name}")
async def get_pbx(name: str, user: AdminUser, hub: HubDep, repos: RepoDep) -> PbxOut:
    return PbxOut.of(hub, await repos.pbxes.get(name))


@router.post("/api/v1/pbxes", status_code=201)
async def create_pbx(body: PbxCreate, user: AdminUser, hub: HubDep, repos: RepoDep) -> PbxOut:
    return PbxOut.of(hub, await _create(hub, repos, body))


@router.patch("/api/v1/pbxes/{name}")
async def edit_pbx_api(name: str, body: PbxEdit, user: AdminUser, hub: HubDep, repos: RepoDep) -> PbxOut:
    """Change a PBX's settings, or disable/enable it (`{"enabled": false}`); its link restarts."""
    record = await _edit(hub, repos, name, body.changes())
    log.info("PBX %s edited by %s (%s)", name, user.name, ", ".join(sorted(body.model_fields_set)))
    return PbxOut.of(hub, record)


@router.delete("/api/v1/pbxes/{name}", status_code=204)
async def delete_pbx(name: str, user: AdminUser, hub: HubDep, repos: RepoDep) -> Response:
    """Remove a PBX. Its calls stay in the call log under its name."""
    await _remove(hub, repos, name)
    log.info("PBX %s removed by %s", name, user.name)
    return Response(status_code=204)


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
    queues: Annotated[str, Form(max_length=4000)] = "",
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
        queues=parse_queue_numbers(queues.replace(",", " ").split()),
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


async def _edit_page(request: Request, hub: Hub, repos: Any, name: str, error: str = "") -> Response:
    record = await repos.pbxes.get(name)
    calls = await repos.calls.count_for_pbx(name)
    status = 400 if error else 200
    return render(
        request, "pbx_edit.html", status_code=status, pbx=PbxOut.of(hub, record), calls=calls, error=error
    )


@router.get("/settings/pbxes/{name}", include_in_schema=False)
async def pbx_edit_page(
    name: str, request: Request, user: AdminUser, hub: HubDep, repos: RepoDep
) -> Response:
    return await _edit_page(request, hub, repos, name)


@router.post("/settings/pbxes/{name}", include_in_schema=False)
async def pbx_edit_form(
    name: str,
    request: Request,
    user: AdminUser,
    hub: HubDep,
    repos: RepoDep,
    host: Annotated[str | None, Form(max_length=253)] = None,
    port: Annotated[int | None, Form(ge=1, le=65535)] = None,
    username: Annotated[str | None, Form(max_length=100)] = None,
    secret: Annotated[str, Form(max_length=500)] = "",
    trunks: Annotated[str | None, Form(max_length=2000)] = None,
    base_url: Annotated[str | None, Form(max_length=500)] = None,
    client_id: Annotated[str | None, Form(max_length=200)] = None,
    client_secret: Annotated[str, Form(max_length=500)] = "",
    webhook_secret: Annotated[str, Form(max_length=500)] = "",
    events: Annotated[Literal["webhook", "websocket"] | None, Form()] = None,
    queues: Annotated[str | None, Form(max_length=4000)] = None,
) -> Response:
    changes = PbxChanges(
        host=host,
        port=port,
        username=username,
        secret=secret or None,
        trunks=None if trunks is None else tuple(t for t in trunks.replace(",", " ").split() if t),
        base_url=base_url,
        client_id=client_id,
        client_secret=client_secret or None,
        webhook_secret=webhook_secret or None,
        events=events,
        queues=None if queues is None else parse_queue_numbers(queues.replace(",", " ").split()),
    )
    try:
        await _edit(hub, repos, name, changes)
    except CallbridgeError as exc:
        return await _edit_page(request, hub, repos, name, exc.message)
    flash(request, f"PBX {name} saved; its link restarts with the new settings.")
    return RedirectResponse("/settings/pbxes", status_code=303)


@router.post("/settings/pbxes/{name}/enabled", include_in_schema=False)
async def pbx_enable_form(
    name: str,
    request: Request,
    user: AdminUser,
    hub: HubDep,
    repos: RepoDep,
    enabled: Annotated[bool, Form()],
) -> Response:
    await _edit(hub, repos, name, PbxChanges(enabled=enabled))
    flash(
        request,
        f"PBX {name} enabled; the hub connects to it again."
        if enabled
        else f"PBX {name} disabled: no link, no webhooks, its agent is refused. Its calls stay in the log.",
    )
    return RedirectResponse("/settings/pbxes", status_code=303)


@router.post("/settings/pbxes/{name}/delete", include_in_schema=False)
async def pbx_delete_form(
    name: str,
    request: Request,
    user: AdminUser,
    hub: HubDep,
    repos: RepoDep,
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    if confirm != "yes":
        message = f"Tick “Yes, delete {name}” to confirm: nothing was deleted."
        return await _edit_page(request, hub, repos, name, message)
    await _remove(hub, repos, name)
    flash(request, f"PBX {name} removed. Its calls stay in the call log under the name {name}.")
    return RedirectResponse("/settings/pbxes", status_code=303)


# POST /webhooks/yeastar/{key} (what a PBX calls) is served ahead of the router: web/webhooks.py.
