"""Call log: JSON API, pages and CSV export. Agents see only their calls and their contacts'."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from callbridge.domain.directory import Match, search_key
from callbridge.domain.errors import InvalidInput, NotFound
from callbridge.domain.events import Direction, Disposition
from callbridge.domain.queues import QueueVisit
from callbridge.domain.recordings import COMMENT_MAX_CHARS, Comment, mentions
from callbridge.domain.times import in_zone, validate_time_zone
from callbridge.domain.transcripts import Transcript
from callbridge.domain.users import User
from callbridge.domain.voicemails import VoicemailTranscript
from callbridge.hub import Hub
from callbridge.services.csv_export import csv_chunks
from callbridge.services.directory import lookup
from callbridge.services.live import DESK_TOPIC
from callbridge.store.calls import CallFilter, CallView, StoredEvent
from callbridge.store.desk import SqlDesk
from callbridge.store.repos import Repos
from callbridge.web.deps import AdminUser, CurrentUser, HubDep, RepoDep
from callbridge.web.pages import flash, render
from callbridge.web.routes.recordings import RecordingOut
from callbridge.web.schemas import MAX_ID, ExternalOut, Id, Page

router = APIRouter(tags=["calls"])

MAX_LIMIT = 500
MAX_NOTE = 10_000
EXPORT_BATCH = 500


class RefOut(BaseModel):
    id: int
    name: str


class QueueOut(BaseModel):
    """The last queue the caller was in (``outcome``: answered | abandoned | timeout | full |
    join_empty | leave_empty | left, or waiting while the caller still waits)."""

    name: str
    wait_seconds: int
    outcome: str
    entered_at: datetime
    answered_by_extension: str | None
    talk_seconds: int
    agents_rung: list[str]
    # one entry per ring nobody picked up; null when the PBX does not report them (Yeastar)
    rings_unanswered: list[str] | None
    visits: int  # how many queues (or stays in a queue) the call went through

    @classmethod
    def of(cls, visits: tuple[QueueVisit, ...]) -> QueueOut | None:
        plain = plain_queue(visits)
        return None if plain is None else cls(**plain)


def plain_queue(visits: tuple[QueueVisit, ...]) -> dict[str, Any] | None:
    """:class:`QueueOut`'s fields in plain values (see :func:`plain_call`)."""
    if not visits:
        return None
    v = visits[-1]
    return {
        "name": v.queue,
        "wait_seconds": v.wait_seconds,
        "outcome": v.outcome.value if v.outcome else "waiting",
        "entered_at": v.entered_at,
        "answered_by_extension": v.agent or None,
        "talk_seconds": v.talk_seconds,
        "agents_rung": list(v.rang),
        "rings_unanswered": list(v.missed) if v.rings_reported else None,
        "visits": len(visits),
    }


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
    queue: QueueOut | None = None
    note: str = Field(default="", description="What a user wrote about the call.")
    call_type: str | None = Field(default=None, description="A type from GET /api/v1/call-types.")

    @classmethod
    def of(cls, c: CallView) -> CallOut:
        return cls(**plain_call(c))


def plain_call(c: CallView) -> dict[str, object]:
    """A call as :class:`CallOut`'s fields, in plain values: what the list serialises straight to
    JSON (``tests/web/test_calls_api.py`` checks that both give the same document)."""
    contact, company = c.contact, c.company
    # The enums as they are: they are ``str`` (StrEnum), and JSON has their values; reading
    # ``.value`` goes through the Enum machinery, four times a call, 200 times a page.
    return {
        "id": c.id,
        "pbx": c.pbx,
        "pbx_call_id": c.pbx_call_id,
        "direction": c.direction,
        "from_number": c.from_number,
        "to_number": c.to_number,
        "from_name": c.from_name,
        "external_number": c.external_number,
        "disposition": c.disposition,
        "hangup_side": c.hangup_side,
        "answered_by_extension": c.answered_by_extension or None,
        "answered_by_user": c.answered_by_user or None,
        "placed_by_extension": c.placed_by_extension or None,
        "placed_by_user": c.placed_by_user or None,
        "started_at": c.started_at,
        "answered_at": c.answered_at,
        "ended_at": c.ended_at,
        "ring_seconds": c.ring_seconds,
        "talk_seconds": c.talk_seconds,
        "contact": {"id": contact.id, "name": contact.name} if contact else None,
        "company": {"id": company.id, "name": company.name} if company else None,
        "match": c.match,
        "transferred_to": c.transferred_to or None,
        "recording": c.recording or None,
        "queue": plain_queue(c.queue_visits),
        "note": c.note,
        "call_type": c.call_type or None,
    }


class TranscriptSegmentOut(BaseModel):
    start: float  # seconds from the recording's start
    end: float
    text: str


class TranscriptOut(BaseModel):
    status: str  # ready | failed
    language: str | None
    text: str
    segments: list[TranscriptSegmentOut]
    reason: str | None  # why a failed transcript failed
    summary: str | None  # from the summary endpoint the user configured, if any

    @classmethod
    def of(cls, t: Transcript | VoicemailTranscript) -> TranscriptOut:
        """A call's transcript, or a voicemail's (which has no summary)."""
        return cls(
            status=t.status.value,
            language=t.language or None,
            text=t.text,
            segments=[TranscriptSegmentOut(start=s.start, end=s.end, text=s.text) for s in t.segments],
            reason=t.reason or None,
            summary=t.summary if isinstance(t, Transcript) else None,
        )


class CallDetailOut(CallOut):
    # The list's ``recording`` is the PBX's file name; a call's own page has the hub's recording.
    recording: RecordingOut | None  # type: ignore[assignment]
    # The PBX's name for the recorded file (what the list's ``recording`` holds).
    recording_file: str | None
    # The recording's transcript (made on the hub), or null.
    transcript: TranscriptOut | None
    events: list[dict[str, object]]
    candidates: list[RefOut]
    # Where the call was written in a connected ERP (ERPNext Call Log, Odoo chatter message).
    external: list[ExternalOut] = Field(default_factory=list)


class LinkIn(BaseModel):
    contact_id: Id | None


# -- filters: one parser for the API, the pages and the export --------------------------------------


_Text = Annotated[str | None, Field(max_length=200)]


class CallParams(BaseModel):
    """The call log's filters, from the query string (checked as one model: ten parameters
    checked one by one cost a noticeable part of a call-list request)."""

    since: _Text = None
    until: _Text = None
    direction: _Text = None
    disposition: _Text = None
    user: _Text = None
    contact_id: _Text = None
    company_id: _Text = None
    tag: _Text = None
    has_recording: _Text = None
    q: _Text = None

    def query_string(self, **extra: str) -> str:
        pairs = {name: value for name, value in self if value}
        pairs.update({k: v for k, v in extra.items() if v})
        return urlencode(pairs)


_E = TypeVar("_E", Direction, Disposition)


ParamsDep = Annotated[CallParams, Query()]


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


@router.get("/api/v1/calls", response_model=Page[CallOut])
async def list_calls(
    params: ParamsDep,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Calls, newest first. Filters: since, until (dates or ISO times), direction, disposition,
    user (name), contact_id, company_id (all its people), tag, has_recording, q (number or name)."""
    f = await build_filter(params, user, repos, hub.settings.default_region)
    items, next_cursor = await repos.calls.search(f, limit, cursor)
    # The busiest read of the API: serialised straight from the views (the documented schema is
    # ``Page[CallOut]``; building and checking 50 models per page cost more than the query).
    body = {"items": [plain_call(c) for c in items], "next": next_cursor}
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


async def _visible_call(call_id: Id, user: User, repos: Repos) -> CallView:
    call = await repos.calls.find(call_id, viewer=user)
    if call is None:
        raise NotFound(f"no call with id {call_id}")
    return call


async def _candidates(call: CallView, repos: Repos, region: str) -> Match | None:
    if not call.external_number:
        return None
    return await lookup(repos.directory, call.external_number, region)


async def colleagues(repos: Repos) -> dict[str, str]:
    """``"pbx/extension"`` → the user name of every mapped extension: pages show an extension
    as the colleague it belongs to."""
    return {f"{m.pbx}/{m.extension}": m.user_name for m in await repos.extensions.all()}


async def spy_pbxes(repos: Repos, user: User) -> list[str]:
    """The PBXs on whose live calls ``user`` is offered listen / whisper / barge: none for an
    agent; for a manager or an admin, those that allow it (see ``POST /api/v1/calls/{id}/spy``)."""
    if not user.sees_all_calls:
        return []
    return sorted(r.name for r in await repos.pbxes.all() if r.allows_supervision)


def _event_dict(e: StoredEvent) -> dict[str, object]:
    return {k: v for k, v in e.payload.items() if k not in ("pbx", "call_id")}


@router.get("/api/v1/calls/{call_id:int}")
async def get_call(call_id: Id, user: CurrentUser, repos: RepoDep, hub: HubDep) -> CallDetailOut:
    call = await _visible_call(call_id, user, repos)
    events = await repos.calls.timeline(call_id)
    match = await _candidates(call, repos, hub.settings.default_region)
    candidates = [RefOut(id=c.id, name=c.display_name) for c in (match.candidates if match else ())]
    recordings = await repos.recordings.for_call(call_id)
    transcript = await repos.transcripts.for_call(call_id)
    fields = CallOut.of(call).model_dump()
    fields["recording_file"] = fields.pop("recording")
    return CallDetailOut(
        **fields,
        recording=RecordingOut.of(recordings[0]) if recordings else None,
        transcript=TranscriptOut.of(transcript) if transcript else None,
        events=[_event_dict(e) for e in events],
        candidates=candidates,
        external=[ExternalOut.of(ref) for ref in await repos.connectors.externals_of_call(call_id)],
    )


class CallNoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=MAX_NOTE, description="Replaces the call's note.")
    call_type: str | None = Field(
        default=None, max_length=64, description='A name from GET /api/v1/call-types; "" clears it.'
    )


class CallTypeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)


class CallTypeOut(BaseModel):
    id: int
    name: str


@router.patch("/api/v1/calls/{call_id:int}")
async def update_call(call_id: Id, body: CallNoteIn, user: CurrentUser, repos: RepoDep) -> CallOut:
    """Write the call's note and pick its type (anyone who may see the call)."""
    call = await _visible_call(call_id, user, repos)
    if body.note is None and body.call_type is None:
        raise InvalidInput("nothing to change: give note or call_type")
    call_type = body.call_type
    # A type taken off the list since stays on the calls that have it.
    if call_type and call_type != call.call_type:
        named = await repos.call_types.named(call_type.strip())
        if named is None:
            known = ", ".join(n for _, n in await repos.call_types.all()) or "none yet; an admin adds them"
            raise InvalidInput(f"unknown call type {call_type!r}; the types are: {known}")
        call_type = named
    await repos.calls.set_note(call_id, body.note.strip() if body.note is not None else None, call_type)
    return CallOut.of(await _visible_call(call_id, user, repos))


@router.get("/api/v1/call-types", tags=["calls"])
async def list_call_types(user: CurrentUser, repos: RepoDep) -> Page[CallTypeOut]:
    return Page(items=[CallTypeOut(id=i, name=n) for i, n in await repos.call_types.all()])


@router.post("/api/v1/call-types", status_code=201, tags=["calls"])
async def add_call_type(body: CallTypeIn, user: AdminUser, repos: RepoDep) -> CallTypeOut:
    """Add a type to the list users pick from (admins)."""
    name = " ".join(body.name.split())
    if not name:
        raise InvalidInput("the call type's name is empty")
    return CallTypeOut(id=await repos.call_types.add(name), name=name)


@router.delete("/api/v1/call-types/{type_id:int}", status_code=204, tags=["calls"])
async def remove_call_type(type_id: Id, user: AdminUser, repos: RepoDep) -> Response:
    """Take a type off the list; calls that have it keep it."""
    if not await repos.call_types.remove(type_id):
        raise NotFound(f"no call type with id {type_id}")
    return Response(status_code=204)


@router.put("/api/v1/calls/{call_id:int}/contact")
async def link_call(call_id: Id, body: LinkIn, user: CurrentUser, repos: RepoDep) -> CallOut:
    """Choose the contact of a call (an ambiguous number), or ``null`` to unlink."""
    await _visible_call(call_id, user, repos)
    await repos.calls.set_contact(call_id, body.contact_id)
    return CallOut.of(await _visible_call(call_id, user, repos))


# -- comments -------------------------------------------------------------------------------------

MAX_AT_SECONDS = 24 * 3600.0
MAX_MENTIONS = 20


class CommentIn(BaseModel):
    text: str = Field(min_length=1, max_length=COMMENT_MAX_CHARS)
    # A moment of the recording the comment is about (seconds from its start), or null.
    at_seconds: float | None = Field(default=None, ge=0, le=MAX_AT_SECONDS, allow_inf_nan=False)


class CommentOut(BaseModel):
    id: int
    author: str
    text: str
    at_seconds: float | None
    created_at: datetime

    @classmethod
    def of(cls, c: Comment) -> CommentOut:
        return cls(id=c.id, author=c.author, text=c.text, at_seconds=c.at_seconds, created_at=c.created_at)


@router.get("/api/v1/calls/{call_id:int}/comments")
async def list_comments(call_id: Id, user: CurrentUser, repos: RepoDep) -> Page[CommentOut]:
    """The call's comments, oldest first."""
    await _visible_call(call_id, user, repos)
    return Page(items=[CommentOut.of(c) for c in await repos.comments.for_call(call_id)])


async def add_comment(
    call_id: int, text: str, at_seconds: float | None, user: User, repos: Repos, hub: Hub
) -> Comment:
    """Store a comment; each ``@name`` mentioned who may see the call gets a desk notification
    (published once committed). A mention of someone who may not see the call notifies nobody."""
    await _visible_call(call_id, user, repos)
    text = text.strip()
    if not text:
        raise InvalidInput("text: write something")
    if len(text) > COMMENT_MAX_CHARS:
        raise InvalidInput(f"text: at most {COMMENT_MAX_CHARS} characters")
    comment = await repos.comments.add(call_id, user.id, user.label, text, at_seconds)
    messages: list[tuple[str, dict[str, object]]] = []
    desk = SqlDesk(repos.session)
    for name in mentions(text)[:MAX_MENTIONS]:
        stored = await repos.users.get_by_name(name)
        if stored is None or not stored.user.active or stored.user.id == user.id:
            continue
        if await repos.calls.find(call_id, viewer=stored.user) is None:
            continue  # never tell anyone about a call they may not open
        note = await desk.add_notification(
            stored.user.id,
            "mention",
            call_id,
            f"{user.label} mentioned you on call {call_id}",
            {"comment_id": comment.id, "text": text[:200], "at_seconds": at_seconds, "author": user.label},
        )
        unread = await desk.unread(stored.user.id)
        messages.append(
            (
                DESK_TOPIC,
                {
                    "users": [stored.user.id],
                    "msg": {"type": "notification", "notification": note.to_dict(), "unread": unread},
                },
            )
        )
    await repos.commit()
    await hub.publish(messages)
    return comment


@router.post("/api/v1/calls/{call_id:int}/comments", status_code=201)
async def post_comment(
    call_id: Id, body: CommentIn, user: CurrentUser, repos: RepoDep, hub: HubDep
) -> CommentOut:
    """Comment on a call, optionally pinned to ``at_seconds`` of its recording; ``@name``
    notifies that user on their desk when they may see the call."""
    return CommentOut.of(await add_comment(call_id, body.text, body.at_seconds, user, repos, hub))


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
    "time_zone",
    "call_type",
    "note",
]


def _csv_row(c: CallView, time_zone: str) -> list[str]:
    def iso(v: datetime | None) -> str:
        # The wall-clock time in the export's zone, with its offset: readable and still exact.
        return in_zone(v, time_zone).isoformat(timespec="seconds") if v else ""

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
        time_zone,
        c.call_type,
        c.note,
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
async def export_calls(
    params: ParamsDep,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    tz: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Every call matching the filters, as CSV (same filters as the list). Times are written in
    ``tz`` (an IANA zone; default: yours, see ``GET /api/v1/me``) with their UTC offset, and the
    ``time_zone`` column names that zone."""
    time_zone = validate_time_zone(tz) if tz else user.zone_or(hub.settings.time_zone)
    f = await build_filter(params, user, repos, hub.settings.default_region)
    rows: list[list[str]] = []
    store = repos.calls
    cursor: str | None = None
    while True:
        items, cursor = await store.search(f, EXPORT_BATCH, cursor)
        rows.extend(_csv_row(c, time_zone) for c in items)
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
        colleagues=await colleagues(repos),
        directions=[d.value for d in Direction],
        dispositions=[d.value for d in Disposition],
        next_url=f"/calls?{params.query_string(cursor=next_cursor)}" if next_cursor else "",
        export_url=f"/calls/export.csv?{params.query_string()}",
    )


@router.get("/calls/{call_id:int}", include_in_schema=False)
async def call_page(
    request: Request,
    call_id: Id,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    choose: Annotated[str, Query(max_length=5)] = "",
) -> Response:
    call = await _visible_call(call_id, user, repos)
    events = await repos.calls.timeline(call_id)
    match = await _candidates(call, repos, hub.settings.default_region)
    recordings = await repos.recordings.for_call(call_id)
    return render(
        request,
        "calls/detail.html",
        call=call,
        recordings=[RecordingOut.of(r) for r in recordings],
        transcript=await repos.transcripts.for_call(call_id),
        comments=await repos.comments.for_call(call_id),
        comment_max=COMMENT_MAX_CHARS,
        call_types=[n for _, n in await repos.call_types.all()],
        note_max=MAX_NOTE,
        events=events,
        candidates=list(match.candidates) if match else [],
        # A chosen contact hides the chooser; "?choose=1" brings it back to change the choice.
        choosing=bool(choose),
        colleagues=await colleagues(repos),
        colleague_call=call.direction is Direction.INTERNAL,
        may_spy=call.ended_at is None and call.pbx in await spy_pbxes(repos, user),
        external=await repos.connectors.externals_of_call(call_id),
        contact_external=(await repos.connectors.externals_of_contacts([call.contact.id])).get(
            call.contact.id, []
        )
        if call.contact
        else [],
        create_url=f"/contacts/new?{urlencode({'number': call.external_number})}"
        if call.external_number
        else "",
    )


def _seconds(raw: str) -> float | None:
    """A moment typed on the page: seconds (``75``, ``75.5``) or ``m:ss`` (``1:15``)."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        if ":" in raw:
            minutes, _, seconds = raw.partition(":")
            value = int(minutes) * 60 + float(seconds)
        else:
            value = float(raw)
    except ValueError as exc:
        raise InvalidInput("at: use seconds (75) or minutes:seconds (1:15)") from exc
    if not 0 <= value <= MAX_AT_SECONDS:
        raise InvalidInput("at: must be a moment of the recording")
    return value


@router.post("/calls/{call_id:int}/comments", include_in_schema=False)
async def comment_form(
    request: Request, call_id: Id, user: CurrentUser, repos: RepoDep, hub: HubDep
) -> Response:
    await _visible_call(call_id, user, repos)
    form = await request.form()
    text, at = form.get("text"), form.get("at")
    try:
        await add_comment(
            call_id,
            text if isinstance(text, str) else "",
            _seconds(at if isinstance(at, str) else ""),
            user,
            repos,
            hub,
        )
    except InvalidInput as exc:
        flash(request, f"The comment was not saved: {exc.message}")
    else:
        flash(request, "Comment added.")
    return RedirectResponse(f"/calls/{call_id}#comments", status_code=303)


@router.post("/calls/{call_id:int}/note", include_in_schema=False)
async def note_form(request: Request, call_id: Id, user: CurrentUser, repos: RepoDep) -> Response:
    form = await request.form()
    note, call_type = form.get("note"), form.get("call_type")
    try:
        await update_call(
            call_id,
            CallNoteIn(
                note=note if isinstance(note, str) else "",
                call_type=call_type if isinstance(call_type, str) else "",
            ),
            user,
            repos,
        )
    except InvalidInput as exc:
        flash(request, f"The note was not saved: {exc.message}")
    except ValueError:
        flash(request, f"The note was not saved: it is longer than {MAX_NOTE} characters")
    else:
        flash(request, "Note saved.")
    return RedirectResponse(f"/calls/{call_id}#note", status_code=303)


@router.post("/calls/{call_id:int}/contact", include_in_schema=False)
async def link_call_form(request: Request, call_id: Id, user: CurrentUser, repos: RepoDep) -> Response:
    await _visible_call(call_id, user, repos)
    form = await request.form()
    raw = form.get("contact_id")
    contact_id = _int(raw if isinstance(raw, str) else None, "contact_id")
    await repos.calls.set_contact(call_id, contact_id)
    flash(request, "The call is linked." if contact_id else "The call is unlinked.")
    return RedirectResponse(f"/calls/{call_id}", status_code=303)
