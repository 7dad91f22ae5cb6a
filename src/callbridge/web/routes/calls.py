"""Call log: JSON API, pages and CSV export. Agents see only their calls and their contacts'."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Annotated, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel

from callbridge.domain.directory import Match, search_key
from callbridge.domain.errors import InvalidInput, NotFound
from callbridge.domain.events import Direction, Disposition
from callbridge.domain.users import User
from callbridge.services.csv_export import csv_chunks
from callbridge.services.directory import lookup
from callbridge.store.calls import CallFilter, CallView, StoredEvent
from callbridge.store.repos import Repos
from callbridge.web.deps import CurrentUser, HubDep, RepoDep
from callbridge.web.pages import flash, render
from callbridge.web.schemas import MAX_ID, Id, Page

router = APIRouter(tags=["calls"])

MAX_LIMIT = 500
EXPORT_BATCH = 500


class RefOut(BaseModel):
    id: int
    name: str


class CallOut(BaseModel):
    id: int
    pbx: str
    pbx_call_id: str
    direction: Direction | None
    from_number: str
    to_number: str
    from_name: str
    external_number: str
    disposition: Disposition | None
    hangup_side: str
    answered_by_extension: str | None
    answered_by_user: str | None
    placed_by_extension: str | None
    placed_by_user: str | None
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    ring_seconds: int
    talk_seconds: int
    contact: RefOut | None
    company: RefOut | None
    match: str
    transferred_to: str | None
    recording: str | None

    @classmethod
    def of(cls, c: CallView) -> CallOut:
        return cls(
            id=c.id,
            pbx=c.pbx,
            pbx_call_id=c.pbx_call_id,
            direction=c.direction,
            from_number=c.from_number,
            to_number=c.to_number,
            from_name=c.from_name,
            external_number=c.external_number,
            disposition=c.disposition,
            hangup_side=c.hangup_side.value,
            answered_by_extension=c.answered_by_extension or None,
            answered_by_user=c.answered_by_user or None,
            placed_by_extension=c.placed_by_extension or None,
            placed_by_user=c.placed_by_user or None,
            started_at=c.started_at,
            answered_at=c.answered_at,
            ended_at=c.ended_at,
            ring_seconds=c.ring_seconds,
            talk_seconds=c.talk_seconds,
            contact=RefOut(id=c.contact.id, name=c.contact.name) if c.contact else None,
            company=RefOut(id=c.company.id, name=c.company.name) if c.company else None,
            match=c.match.value,
            transferred_to=c.transferred_to or None,
            recording=c.recording or None,
        )


class CallDetailOut(CallOut):
    events: list[dict[str, object]]
    candidates: list[RefOut]


class LinkIn(BaseModel):
    contact_id: Id | None


# -- filters: one parser for the API, the pages and the export --------------------------------------


@dataclass(frozen=True, slots=True)
class CallParams:
    since: str | None = None
    until: str | None = None
    direction: str | None = None
    disposition: str | None = None
    user: str | None = None
    contact_id: str | None = None
    company_id: str | None = None
    tag: str | None = None
    has_recording: str | None = None
    q: str | None = None

    def query_string(self, **extra: str) -> str:
        pairs = {name: getattr(self, name) for name in self.__slots__ if getattr(self, name)}
        pairs.update({k: v for k, v in extra.items() if v})
        return urlencode(pairs)


_Q = Annotated[str | None, Query(max_length=200)]
_E = TypeVar("_E", Direction, Disposition)


async def call_params(  # async: no worker thread (see web/deps.py)
    since: _Q = None,
    until: _Q = None,
    direction: _Q = None,
    disposition: _Q = None,
    user: _Q = None,
    contact_id: _Q = None,
    company_id: _Q = None,
    tag: _Q = None,
    has_recording: _Q = None,
    q: _Q = None,
) -> CallParams:
    return CallParams(
        since, until, direction, disposition, user, contact_id, company_id, tag, has_recording, q
    )


ParamsDep = Annotated[CallParams, Depends(call_params)]


def _when(value: str | None, name: str, *, end: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"{name}: use a date (2025-03-01) or an ISO 8601 time") from exc
    if len(value.strip()) == 10 and end:
        # A bare end date means "through that day".
        parsed = datetime.combine(parsed.date(), time.max)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _int(value: str | None, name: str) -> int | None:
    if not value:
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidInput(f"{name}: must be a whole number") from exc
    if not 1 <= number <= MAX_ID:
        raise InvalidInput(f"{name}: must be an id between 1 and {MAX_ID}")
    return number


def _enum(kind: type[_E], value: str | None, name: str) -> _E | None:
    if not value:
        return None
    try:
        return kind(value.strip().lower())
    except ValueError as exc:
        allowed = ", ".join(m.value for m in kind)
        raise InvalidInput(f"{name}: must be one of {allowed}") from exc


async def build_filter(p: CallParams, user: User, repos: Repos, region: str) -> CallFilter:
    user_id: int | None = None
    if p.user:
        stored = await repos.users.get_by_name(p.user.strip())
        if stored is None:
            raise InvalidInput(f"user: no user named {p.user!r}")
        user_id = stored.user.id
    has_recording: bool | None = None
    if p.has_recording:
        value = p.has_recording.strip().lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidInput("has_recording: use true or false")
        has_recording = value in ("true", "1", "yes")
    text = (p.q or "").strip()
    key = search_key(text, region) if text else ""
    digits = text if text.isdigit() and not key else ""
    return CallFilter(
        since=_when(p.since, "since"),
        until=_when(p.until, "until", end=True),
        direction=_enum(Direction, p.direction, "direction"),
        disposition=_enum(Disposition, p.disposition, "disposition"),
        user_id=user_id,
        contact_id=_int(p.contact_id, "contact_id"),
        company_id=_int(p.company_id, "company_id"),
        tag=(p.tag or "").strip(),
        has_recording=has_recording,
        number_key=key,
        digits=digits,
        text="" if key or digits else text,
        viewer=user,
    )


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=200)]


# -- JSON API ----------------------------------------------------------------------------------------


@router.get("/api/v1/calls")
async def list_calls(
    params: ParamsDep,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CallOut]:
    """Calls, newest first. Filters: since, until (dates or ISO times), direction, disposition,
    user (name), contact_id, company_id (all its people), tag, has_recording, q (number or name)."""
    f = await build_filter(params, user, repos, hub.settings.default_region)
    items, next_cursor = await repos.calls.search(f, limit, cursor)
    return Page(items=[CallOut.of(c) for c in items], next=next_cursor)


async def _visible_call(call_id: Id, user: User, repos: Repos) -> CallView:
    call = await repos.calls.find(call_id, viewer=user)
    if call is None:
        raise NotFound(f"no call with id {call_id}")
    return call


async def _candidates(call: CallView, repos: Repos, region: str) -> Match | None:
    if not call.external_number:
        return None
    return await lookup(repos.directory, call.external_number, region)


def _event_dict(e: StoredEvent) -> dict[str, object]:
    return {k: v for k, v in e.payload.items() if k not in ("pbx", "call_id")}


@router.get("/api/v1/calls/{call_id:int}")
async def get_call(call_id: Id, user: CurrentUser, repos: RepoDep, hub: HubDep) -> CallDetailOut:
    call = await _visible_call(call_id, user, repos)
    events = await repos.calls.timeline(call_id)
    match = await _candidates(call, repos, hub.settings.default_region)
    candidates = [RefOut(id=c.id, name=c.display_name) for c in (match.candidates if match else ())]
    return CallDetailOut(
        **CallOut.of(call).model_dump(), events=[_event_dict(e) for e in events], candidates=candidates
    )


@router.put("/api/v1/calls/{call_id:int}/contact")
async def link_call(call_id: Id, body: LinkIn, user: CurrentUser, repos: RepoDep) -> CallOut:
    """Choose the contact of a call (an ambiguous number), or ``null`` to unlink."""
    await _visible_call(call_id, user, repos)
    await repos.calls.set_contact(call_id, body.contact_id)
    return CallOut.of(await _visible_call(call_id, user, repos))


# -- CSV export ----------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "id",
    "pbx",
    "pbx_call_id",
    "direction",
    "from_number",
    "to_number",
    "disposition",
    "answered_by_extension",
    "answered_by_user",
    "placed_by_extension",
    "placed_by_user",
    "started_at",
    "answered_at",
    "ended_at",
    "ring_seconds",
    "talk_seconds",
    "contact",
    "company",
    "transferred_to",
    "recording",
]


def _csv_row(c: CallView) -> list[str]:
    def iso(v: datetime | None) -> str:
        return v.isoformat() if v else ""

    return [
        str(c.id),
        c.pbx,
        c.pbx_call_id,
        c.direction.value if c.direction else "",
        c.from_number,
        c.to_number,
        c.disposition.value if c.disposition else "",
        c.answered_by_extension,
        c.answered_by_user,
        c.placed_by_extension,
        c.placed_by_user,
        iso(c.started_at),
        iso(c.answered_at),
        iso(c.ended_at),
        str(c.ring_seconds),
        str(c.talk_seconds),
        c.contact.name if c.contact else "",
        c.company.name if c.company else "",
        c.transferred_to,
        c.recording,
    ]


@router.get("/calls/export.csv", include_in_schema=False)
@router.get(
    "/api/v1/calls/export.csv",
    responses={
        200: {
            "description": "The matching calls as CSV (UTF-8, a header row first).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def export_calls(params: ParamsDep, user: CurrentUser, repos: RepoDep, hub: HubDep) -> Response:
    """Every call matching the filters, as CSV (same filters as the list)."""
    f = await build_filter(params, user, repos, hub.settings.default_region)
    rows: list[list[str]] = []
    store = repos.calls
    cursor: str | None = None
    while True:
        items, cursor = await store.search(f, EXPORT_BATCH, cursor)
        rows.extend(_csv_row(c) for c in items)
        if cursor is None:
            break

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        csv_chunks(CSV_COLUMNS, rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="calls-{stamp}.csv"'},
    )


# -- pages ----------------------------------------------------------------------------------------------


@router.get("/calls", include_in_schema=False)
async def calls_page(
    request: Request,
    params: ParamsDep,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    cursor: Cursor = None,
) -> Response:
    error = ""
    items: list[CallView] = []
    next_cursor: str | None = None
    try:
        f = await build_filter(params, user, repos, hub.settings.default_region)
        items, next_cursor = await repos.calls.search(f, 50, cursor)
    except InvalidInput as exc:
        error = exc.message
    users = [u.name for u in await repos.users.all()] if user.sees_all_calls else []
    return render(
        request,
        "calls/list.html",
        status_code=400 if error else 200,
        calls=items,
        params=params,
        error=error,
        users=users,
        directions=[d.value for d in Direction],
        dispositions=[d.value for d in Disposition],
        next_url=f"/calls?{params.query_string(cursor=next_cursor)}" if next_cursor else "",
        export_url=f"/calls/export.csv?{params.query_string()}",
    )


@router.get("/calls/{call_id:int}", include_in_schema=False)
async def call_page(
    request: Request, call_id: Id, user: CurrentUser, repos: RepoDep, hub: HubDep
) -> Response:
    call = await _visible_call(call_id, user, repos)
    events = await repos.calls.timeline(call_id)
    match = await _candidates(call, repos, hub.settings.default_region)
    return render(
        request,
        "calls/detail.html",
        call=call,
        events=events,
        candidates=list(match.candidates) if match else [],
        create_url=f"/contacts/new?{urlencode({'number': call.external_number})}"
        if call.external_number
        else "",
    )


@router.post("/calls/{call_id:int}/contact", include_in_schema=False)
async def link_call_form(request: Request, call_id: Id, user: CurrentUser, repos: RepoDep) -> Response:
    await _visible_call(call_id, user, repos)
    form = await request.form()
    raw = form.get("contact_id")
    contact_id = _int(raw if isinstance(raw, str) else None, "contact_id")
    await repos.calls.set_contact(call_id, contact_id)
    flash(request, "The call is linked." if contact_id else "The call is unlinked.")
    return RedirectResponse(f"/calls/{call_id}", status_code=303)
