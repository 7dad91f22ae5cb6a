"""The live desk's pages and API: click-to-call, hang up, notifications, presence, live calls."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from callbridge.domain.errors import NotFound
from callbridge.domain.tasks import TaskStatus
from callbridge.domain.users import User
from callbridge.hub import Hub
from callbridge.services.dialing import click_to_call
from callbridge.services.tasks import task_title
from callbridge.store.calls import CallView
from callbridge.store.desk import Alerts, SqlDesk
from callbridge.store.repos import Repos
from callbridge.web.deps import CurrentUser, HubDep, ManagerUser, RepoDep
from callbridge.web.pages import flash, render
from callbridge.web.routes.calls import colleagues, spy_pbxes
from callbridge.web.schemas import Id

router = APIRouter()


class OriginateIn(BaseModel):
    number: str = Field(min_length=1, max_length=64, description="The number to call, in any usual format.")


class OriginateOut(BaseModel):
    call_id: str = Field(description="The PBX's id of the new call.")
    pbx: str
    extension: str = Field(description="Your extension, which rang first.")
    number: str = Field(description="The number dialed (E.164 or an extension).")


class PresenceOut(BaseModel):
    pbx: str
    extension: str
    user: str | None
    presence: str
    at: datetime | None


class AlertsIo(BaseModel):
    """How the desk alerts you to a call ringing at your phone, beyond the card (both off until
    you turn them on)."""

    model_config = ConfigDict(extra="forbid")
    ring_sound: bool = Field(description="Play a ring sound in the open page while a call rings.")
    desktop_notifications: bool = Field(
        description="Show a desktop notification (the browser asks for permission once)."
    )


class NotificationOut(BaseModel):
    id: int
    kind: str
    call_id: int | None
    title: str
    body: dict[str, Any]
    created_at: str
    read: bool


class NotificationsOut(BaseModel):
    items: list[NotificationOut]
    unread: int


@router.post(
    "/api/v1/calls/originate",
    operation_id="originate_call",
    summary="Click-to-call: ring your phone, then the number",
    response_model=OriginateOut,
    tags=["calls"],
    responses={
        400: {"description": "No extension mapped to you, or not a number"},
        422: {"description": "The PBX refused: your phone is busy, did not answer, is not registered"},
        503: {"description": "The PBX cannot be reached"},
    },
)
async def originate_call(body: OriginateIn, user: CurrentUser, hub: HubDep) -> OriginateOut:
    """Rings your extension first; when you pick up, the PBX dials the number. Progress reaches
    your open pages over the live connection; the answer comes once your phone answered."""
    async with hub.db.unit() as repos:
        extensions = await SqlDesk(repos.session).extensions_of(user.id)
        mapped = [(m.pbx, m.extension) for m in await repos.extensions.all()]
    assert hub.commands is not None
    placed = await click_to_call(
        hub.commands, hub.bus, user.id, extensions, body.number, hub.settings.default_region, mapped=mapped
    )
    return OriginateOut(**placed)


async def _may_hang_up(hub: Hub, repos: Repos, user: User, call: CallView) -> bool:
    """The users the call is ringing at (their card is open), and those who may see the call."""
    keys = {c.get("key") for c in await hub.board.cards(user.id)}
    if f"{call.pbx}/{call.pbx_call_id}" in keys:
        return True
    return await repos.calls.find(call.id, viewer=user) is not None


@router.post(
    "/api/v1/calls/{call_id:int}/hangup",
    operation_id="hangup_call",
    summary="Hang up a call in progress",
    status_code=204,
    tags=["calls"],
)
async def hangup_call(call_id: Id, user: CurrentUser, hub: HubDep, repos: RepoDep) -> Response:
    call = await repos.calls.find(call_id)
    # Another user's call answers exactly like a missing one: no oracle for call ids.
    if call is None or not await _may_hang_up(hub, repos, user, call):
        raise NotFound(f"no call with id {call_id}")
    if call.disposition is not None:
        raise NotFound("the call has already ended")
    assert hub.commands is not None
    await hub.commands.hangup(call.pbx, call.pbx_call_id)
    return Response(status_code=204)


@router.get("/api/v1/me/alerts", operation_id="get_my_alerts", tags=["desk"])
async def get_my_alerts(user: CurrentUser, repos: RepoDep) -> AlertsIo:
    return AlertsIo(**(await SqlDesk(repos.session).alerts(user.id)).to_dict())


@router.put("/api/v1/me/alerts", operation_id="set_my_alerts", tags=["desk"])
async def set_my_alerts(body: AlertsIo, user: CurrentUser, repos: RepoDep) -> AlertsIo:
    """Turn your ring sound and desktop notifications on or off; open pages follow at their
    next connection (a reload)."""
    await SqlDesk(repos.session).set_alerts(user.id, Alerts(body.ring_sound, body.desktop_notifications))
    await repos.commit()
    return body


@router.get("/api/v1/notifications", operation_id="list_notifications", tags=["desk"])
async def list_notifications(user: CurrentUser, repos: RepoDep, unread: bool = False) -> NotificationsOut:
    items = await SqlDesk(repos.session).notifications(user.id, unread_only=unread)
    return NotificationsOut(
        items=[NotificationOut(**n.to_dict()) for n in items],
        unread=await SqlDesk(repos.session).unread(user.id),
    )


@router.post(
    "/api/v1/notifications/{notification_id:int}/read", operation_id="read_notification", tags=["desk"]
)
async def read_notification(notification_id: Id, user: CurrentUser, repos: RepoDep) -> dict[str, int]:
    if not await SqlDesk(repos.session).mark_read(user.id, notification_id):
        found = [
            n
            for n in await SqlDesk(repos.session).notifications(user.id, limit=500)
            if n.id == notification_id
        ]
        if not found:
            raise NotFound(f"no notification {notification_id}")
    return {"unread": await SqlDesk(repos.session).unread(user.id)}


@router.post("/api/v1/notifications/read", operation_id="read_all_notifications", tags=["desk"])
async def read_all_notifications(user: CurrentUser, repos: RepoDep) -> dict[str, int]:
    await SqlDesk(repos.session).mark_read(user.id)
    return {"unread": 0}


async def presence_rows(hub: Hub, repos: Repos) -> list[PresenceOut]:
    board = await hub.board.all()
    names = {(m.pbx, m.extension): m.user_name for m in await repos.extensions.all()}
    keys = sorted(set(board) | set(names), key=lambda k: (k[0], k[1].zfill(8)))
    rows = []
    for key in keys:
        presence, at = board.get(key, (None, None))
        rows.append(
            PresenceOut(
                pbx=key[0],
                extension=key[1],
                user=names.get(key),
                presence=presence.value if presence is not None else "unknown",
                at=at,
            )
        )
    return rows


@router.get("/api/v1/presence", operation_id="list_presence", tags=["desk"])
async def list_presence(user: CurrentUser, hub: HubDep, repos: RepoDep) -> list[PresenceOut]:
    return await presence_rows(hub, repos)


async def _live_calls(repos: Repos, user: User) -> list[CallView]:
    out = []
    for call_id in await SqlDesk(repos.session).calls_in_progress():
        found = await repos.calls.find(call_id, viewer=user)
        if found is not None:
            out.append(found)
    return out


@router.get("/api/v1/calls/live", operation_id="list_live_calls", tags=["calls"])
async def list_live_calls(user: ManagerUser, repos: RepoDep) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "pbx": c.pbx,
            "direction": c.direction.value if c.direction else None,
            "from_number": c.from_number,
            "to_number": c.to_number,
            "contact_name": c.contact.name if c.contact else None,
            "started_at": c.started_at.isoformat(),
            "answered_at": c.answered_at.isoformat() if c.answered_at else None,
            "answered_by_extension": c.answered_by_extension or None,
            "placed_by_extension": c.placed_by_extension or None,
        }
        for c in await _live_calls(repos, user)
    ]


# -- pages --------------------------------------------------------------------------------------


@router.get("/desk", include_in_schema=False)
async def desk_page(request: Request, user: CurrentUser, hub: HubDep, repos: RepoDep) -> Response:
    return render(
        request,
        "desk/desk.html",
        presence=await presence_rows(hub, repos),
        notifications=await SqlDesk(repos.session).notifications(user.id, limit=30),
        unread=await SqlDesk(repos.session).unread(user.id),
        extensions=await SqlDesk(repos.session).extensions_of(user.id),
        **await _followups(hub, repos, user),
    )


def _age(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 24 else f"{hours // 24} d {hours % 24} h"


async def _followups(hub: Hub, repos: Repos, user: User) -> dict[str, Any]:
    """The user's open tasks, the most owed first (overdue ones, then snoozed ones)."""
    assert hub.followups is not None
    found, _ = await repos.tasks.search(
        status=TaskStatus.OPEN,
        assignee_id=user.id,
        any_assignee=False,
        limit=100,
        today=hub.followups.today(),
    )
    at = datetime.now(UTC)
    rows = [
        {
            "task": t,
            "title": task_title(t, hub.settings.default_region),
            "overdue": t.due_at <= at,
            "age": _age((at - t.due_at).total_seconds()),
        }
        for t in found
    ]
    return {"followups": rows, "overdue": sum(1 for r in rows if r["overdue"])}


@router.get("/desk/follow-ups", include_in_schema=False)
async def followups_fragment(request: Request, user: CurrentUser, hub: HubDep, repos: RepoDep) -> Response:
    """The desk's "My follow-ups" section alone: the page reloads it when a task changes."""
    return render(request, "desk/_followups.html", **await _followups(hub, repos, user))


@router.get("/desk/calls", include_in_schema=False)
async def live_calls_page(request: Request, user: ManagerUser, repos: RepoDep) -> Response:
    return render(
        request,
        "desk/calls.html",
        calls=await _live_calls(repos, user),
        colleagues=await colleagues(repos),
        spy_pbxes=await spy_pbxes(repos, user),
    )


@router.post("/account/alerts", include_in_schema=False)
async def account_alerts_form(
    request: Request,
    user: CurrentUser,
    repos: RepoDep,
    ring_sound: Annotated[str, Form(max_length=10)] = "",
    desktop_notifications: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    alerts = Alerts(ring_sound=bool(ring_sound), desktop_notifications=bool(desktop_notifications))
    await SqlDesk(repos.session).set_alerts(user.id, alerts)
    await repos.commit()
    flash(request, "Your call alerts were saved.")
    return RedirectResponse("/account", status_code=303)
