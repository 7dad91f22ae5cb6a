"""ERP connectors (admin): their state, adding one, testing the connection, a sync now."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from callbridge.connectors import add_connector, connector_settings
from callbridge.domain.connectors import ConnectorError, ConnectorKind, ConnectorStatus
from callbridge.domain.errors import CallbridgeError, NotFound
from callbridge.store.repos import Repos
from callbridge.web.deps import AdminUser, HubDep, RepoDep
from callbridge.web.pages import flash, render
from callbridge.web.schemas import Strict

log = logging.getLogger(__name__)
router = APIRouter(tags=["connectors"])
_syncs: set[asyncio.Task[None]] = set()


class ConnectorOut(BaseModel):
    name: str
    kind: ConnectorKind
    state: str = Field(description="new, syncing, ok, failing or disabled.")
    last_sync_at: datetime | None
    contacts: int = Field(description="Contacts synced from this ERP.")
    calls_pushed: int = Field(description="Calls written into the ERP.")
    calls_waiting: int = Field(description="Calls waiting to be written (the ERP is down, slow or refusing).")
    last_error: str = Field(description="What went wrong last, in words; empty when all went through.")

    @classmethod
    def of(cls, s: ConnectorStatus) -> ConnectorOut:
        r = s.record
        return cls(
            name=r.name,
            kind=r.kind,
            state=r.state.value,
            last_sync_at=r.last_sync_at,
            contacts=s.contacts,
            calls_pushed=s.calls_pushed,
            calls_waiting=s.calls_waiting,
            last_error=r.last_error,
        )


class ConnectorCreate(Strict):
    kind: ConnectorKind
    name: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=1, max_length=500)
    api_key: str = Field(min_length=1, max_length=500)
    api_secret: str = Field("", max_length=500, description="ERPNext only.")
    database: str = Field("", max_length=200, description="Odoo only.")
    username: str = Field("", max_length=200, description="Odoo only: the login of the API key's user.")
    api: Literal["", "jsonrpc", "json2"] = Field("", description="Odoo only; empty: ask the server.")
    time_zone: str = Field("", max_length=64, description="ERPNext only: the site's time zone.")
    sync_seconds: float | None = Field(None, description="Seconds between incremental syncs.")


class CheckOut(BaseModel):
    what: str
    ok: bool
    detail: str


class TestOut(BaseModel):
    ok: bool
    checks: list[CheckOut]


@router.get("/api/v1/connectors")
async def list_connectors(user: AdminUser, repos: RepoDep) -> list[ConnectorOut]:
    """Every connector with its state: last sync, contacts synced, calls written and waiting, the
    last error in words."""
    return [ConnectorOut.of(s) for s in await repos.connectors.statuses()]


@router.post("/api/v1/connectors", status_code=201)
async def create_connector(body: ConnectorCreate, user: AdminUser, repos: RepoDep) -> ConnectorOut:
    """Connect an ERPNext site or an Odoo database; the credentials are stored encrypted."""
    config, secrets = connector_settings(
        body.kind,
        api_key=body.api_key,
        api_secret=body.api_secret,
        database=body.database,
        username=body.username,
        api=body.api,
        time_zone=body.time_zone,
        sync_seconds=body.sync_seconds,
    )
    record = await add_connector(repos.connectors, body.kind, body.name, body.url, config, secrets)
    return ConnectorOut.of(ConnectorStatus(record, 0, 0, 0))


@router.post("/api/v1/connectors/{name}/test")
async def test_connector(name: str, user: AdminUser, repos: RepoDep, hub: HubDep) -> TestOut:
    """Reach the ERP, sign in, read each record type it needs; each step says what is wrong."""
    await repos.connectors.get(name)
    assert hub.connectors is not None
    checks = await hub.connectors.test(name)
    return TestOut(
        ok=all(c.ok for c in checks), checks=[CheckOut(what=c.what, ok=c.ok, detail=c.detail) for c in checks]
    )


@router.post("/api/v1/connectors/{name}/sync", status_code=202)
async def sync_connector(
    name: str, user: AdminUser, repos: RepoDep, hub: HubDep, full: bool = False
) -> Response:
    """Start a sync now (in the background; the connector's state shows its progress)."""
    await repos.connectors.get(name)
    assert hub.connectors is not None
    connectors = hub.connectors

    async def work() -> None:
        try:
            await connectors.sync(name, full=full)
        except ConnectorError as exc:
            log.warning("connector %s: sync failed: %s", name, exc)

    task = asyncio.create_task(work(), name=f"connector-sync-{name}")
    _syncs.add(task)
    task.add_done_callback(_syncs.discard)
    return Response(status_code=202)


@router.delete("/api/v1/connectors/{name}", status_code=204)
async def remove_connector(name: str, user: AdminUser, repos: RepoDep) -> Response:
    """Remove a connector with the contacts it synced; calls stay in the log."""
    if await repos.connectors.find(name) is None:
        raise NotFound(f"no connector named {name!r}")
    await repos.connectors.remove(name)
    return Response(status_code=204)


# -- Settings → Connectors (pages) -------------------------------------------------------------------


async def _page(
    request: Request,
    repos: Repos,
    *,
    status_code: int = 200,
    error: str = "",
    checks: TestOut | None = None,
    tested: str = "",
) -> Response:
    statuses = await repos.connectors.statuses()
    return render(
        request,
        "connectors.html",
        status_code=status_code,
        connectors=[ConnectorOut.of(s) for s in statuses],
        urls={s.record.name: s.record.url for s in statuses},
        error=error,
        checks=checks,
        tested=tested,
    )


@router.get("/settings/connectors", include_in_schema=False)
async def connectors_page(request: Request, user: AdminUser, repos: RepoDep) -> Response:
    return await _page(request, repos)


@router.post("/settings/connectors", include_in_schema=False)
async def create_connector_form(
    request: Request,
    user: AdminUser,
    repos: RepoDep,
    kind: Annotated[ConnectorKind, Form()],
    name: Annotated[str, Form(max_length=64)] = "",
    url: Annotated[str, Form(max_length=500)] = "",
    api_key: Annotated[str, Form(max_length=500)] = "",
    api_secret: Annotated[str, Form(max_length=500)] = "",
    database: Annotated[str, Form(max_length=200)] = "",
    username: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        config, secrets = connector_settings(
            kind, api_key=api_key, api_secret=api_secret, database=database, username=username
        )
        record = await add_connector(repos.connectors, kind, name, url, config, secrets)
    except CallbridgeError as exc:
        return await _page(request, repos, status_code=400, error=exc.message)
    flash(request, f"Connector {record.name} added. Test the connection, then sync.")
    return RedirectResponse("/settings/connectors", status_code=303)


@router.post("/settings/connectors/{name}/test", include_in_schema=False)
async def test_connector_form(
    request: Request, name: str, user: AdminUser, repos: RepoDep, hub: HubDep
) -> Response:
    result = await test_connector(name, user, repos, hub)
    return await _page(request, repos, checks=result, tested=name)


@router.post("/settings/connectors/{name}/sync", include_in_schema=False)
async def sync_connector_form(
    request: Request, name: str, user: AdminUser, repos: RepoDep, hub: HubDep
) -> Response:
    await sync_connector(name, user, repos, hub)
    flash(request, f"Sync of {name} started; its state below shows how it goes.")
    return RedirectResponse("/settings/connectors", status_code=303)
