"""JSON API: queues, their figures per period (docs/queues.md), their settings, and what a
supervisor does (pause a member with a reason; listen, whisper or barge into a call)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from annotated_types import Interval
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from callbridge.domain.errors import InvalidInput, NotFound
from callbridge.domain.pbx import PbxKind
from callbridge.domain.queues import MAX_SL_SECONDS, QueueSettings, queue_figures
from callbridge.services.pbxes import yeastar_queues
from callbridge.services.queues import parse_period
from callbridge.web.deps import CurrentUser, HubDep, ManagerUser, RepoDep
from callbridge.web.schemas import Id, Strict

router = APIRouter(prefix="/api/v1", tags=["queues"])

QueueName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\s/|]+$")]
Seconds = Annotated[int, Interval(ge=0, le=MAX_SL_SECONDS)]


class QueueOut(BaseModel):
    name: str
    sl_seconds: int
    short_abandon_seconds: int
    wrapup_seconds: int


class QueueList(BaseModel):
    items: list[QueueOut]


class AgentStatsOut(BaseModel):
    extension: str
    user: str | None
    answered: int
    # null: not measured (the agent took Yeastar queue calls: Yeastar does not report rings
    # that went unanswered, nor members logging in or pausing), never a zero that was not seen
    ring_no_answer: int | None
    talk_seconds: int
    avg_handle_seconds: float
    logged_in_seconds: int | None
    paused_seconds_by_reason: dict[str, int] | None


class QueueStatsOut(BaseModel):
    queue: str
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    sl_seconds: int
    short_abandon_seconds: int
    offered: int
    answered: int
    abandoned: int
    short_abandoned: int
    # null: not measured in this period (some visits came from a Yeastar, which does not say
    # why an unanswered caller left; they count as abandoned or other_left)
    timed_out: int | None
    full: int | None
    join_empty: int | None
    leave_empty: int | None
    other_left: int
    answer_rate: float
    service_level: float
    avg_answer_seconds: float
    avg_wait_seconds: float
    max_wait_seconds: int
    avg_handle_seconds: float
    agents: list[AgentStatsOut]


class SettingsIn(Strict):
    sl_seconds: Seconds = Field(description="Service level target T: answered within T seconds.")
    short_abandon_seconds: Seconds = Field(description="Abandons under this many seconds are short.")
    wrapup_seconds: Seconds = Field(default=0, description="Added to each answered call's handle time.")


class PauseIn(Strict):
    paused: bool
    reason: str = Field(default="", max_length=100)
    pbx: str = Field(default="", max_length=64, description="Needed when several PBXs are set up.")


class SpyIn(Strict):
    mode: Literal["listen", "whisper", "barge"]
    extension: str = Field(
        default="", max_length=32, description="The supervisor's phone; default: their own extension."
    )


@router.get("/queues")
async def list_queues(user: CurrentUser, repos: RepoDep) -> QueueList:
    """Every queue the call log, the member log or the settings know, with its settings."""
    items = []
    for name in await _known_queues(repos):
        s = await repos.queues.settings(name)
        items.append(QueueOut(name=name, **_settings_dict(s)))
    return QueueList(items=items)


async def _known_queues(repos: Any) -> list[str]:
    """The queues the call log, the member log or the settings know, and the queues listed on
    Yeastar PBXs (known before their first call)."""
    names = set(await repos.queues.names())
    for record in await repos.pbxes.all():
        if record.kind is PbxKind.YEASTAR:
            names |= {name for _, name in yeastar_queues(record.config)}
    return sorted(names)


def _settings_dict(s: QueueSettings) -> dict[str, int]:
    return {
        "sl_seconds": s.sl_seconds,
        "short_abandon_seconds": s.short_abandon_seconds,
        "wrapup_seconds": s.wrapup_seconds,
    }


@router.get("/queues/{name}/stats")
async def queue_stats(
    name: QueueName,
    user: CurrentUser,
    repos: RepoDep,
    start: Annotated[str, Query(alias="from", max_length=40)] = "",
    end: Annotated[str, Query(alias="to", max_length=40)] = "",
    sl_seconds: Annotated[int | None, Query(ge=0, le=MAX_SL_SECONDS)] = None,
) -> QueueStatsOut:
    """The queue's figures over [from, to) (ISO dates or times, UTC when no offset; default
    today, UTC). Managers and admins see every agent's row; an agent sees only the rows of
    their own extensions (the queue's totals are the team's and shown to all, as on the
    wallboard)."""
    try:
        lo, hi = parse_period(start, end, datetime.now(UTC))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if name not in await _known_queues(repos):
        raise NotFound(f"no queue named {name!r} is known")
    settings = await repos.queues.settings(name)
    if sl_seconds is not None:
        settings = QueueSettings(sl_seconds, settings.short_abandon_seconds, settings.wrapup_seconds)
    visits = await repos.queues.visits(lo, hi, name)
    members = await repos.queues.member_events(name, hi)
    f = queue_figures(name, visits, settings, members, lo, hi)
    mapped = await repos.extensions.all()
    owner = {m.extension: m.user_name for m in mapped}
    mine = {m.extension for m in mapped if m.user_id == user.id}
    rows = [
        AgentStatsOut(
            extension=a.extension,
            user=owner.get(a.extension),
            answered=a.answered,
            ring_no_answer=a.ring_no_answer if a.rings_measured else None,
            talk_seconds=a.talk_seconds,
            avg_handle_seconds=a.avg_handle_seconds,
            logged_in_seconds=a.logged_in_seconds if a.member_logged or a.rings_measured else None,
            paused_seconds_by_reason=a.paused_seconds_by_reason
            if a.member_logged or a.rings_measured
            else None,
        )
        for a in sorted(f.agents.values(), key=lambda a: a.extension)
        if user.sees_all_calls or a.extension in mine
    ]
    out = QueueStatsOut(
        start=lo,
        end=hi,
        sl_seconds=settings.sl_seconds,
        short_abandon_seconds=settings.short_abandon_seconds,
        agents=rows,
        **f.as_dict(),
    )
    if not f.exits_measured:
        out.timed_out = out.full = out.join_empty = out.leave_empty = None
    return out


@router.put("/queues/{name}/settings")
async def set_queue_settings(
    name: QueueName, body: SettingsIn, user: ManagerUser, repos: RepoDep
) -> QueueOut:
    """Set the queue's service level target, short-abandon threshold and wrap-up time."""
    settings = QueueSettings(body.sl_seconds, body.short_abandon_seconds, body.wrapup_seconds)
    await repos.queues.set_settings(name, settings)
    await repos.commit()
    return QueueOut(name=name, **_settings_dict(settings))


async def _pbx_of(repos: RepoDep, wanted: str) -> str:
    names = [p.name for p in await repos.pbxes.all() if p.enabled]
    if wanted:
        if wanted not in names:
            raise NotFound(f"no enabled PBX named {wanted!r}")
        return wanted
    if len(names) != 1:
        raise InvalidInput("say which PBX (pbx): " + (", ".join(names) or "none is set up"))
    return names[0]


_PBX_ANSWERS: dict[int | str, dict[str, object]] = {
    400: {"description": "Say which PBX (several are set up), or no phone to ring"},
    404: {"description": "No such PBX or call"},
    422: {"description": "The PBX refused: not a member, the call ended, not possible on this PBX"},
    503: {"description": "The PBX cannot be reached"},
}


@router.post("/queues/{name}/members/{extension}/pause", status_code=204, responses=_PBX_ANSWERS)
async def pause_member(
    name: QueueName,
    extension: Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_.-]+$")],
    body: PauseIn,
    user: ManagerUser,
    repos: RepoDep,
    hub: HubDep,
) -> Response:
    """Pause (with a reason) or unpause a member of the queue: AMI ``QueuePause``."""
    pbx = await _pbx_of(repos, body.pbx)
    assert hub.commands is not None
    await hub.commands.queue_pause(pbx, name, extension, body.paused, body.reason.strip())
    return Response(status_code=204)


@router.post("/calls/{call_id:int}/spy", status_code=204, responses=_PBX_ANSWERS)
async def spy_on_call(call_id: Id, body: SpyIn, user: ManagerUser, repos: RepoDep, hub: HubDep) -> Response:
    """Ring the supervisor's phone; answered, it listens to the call (or whispers to the agent,
    or barges in): ChanSpy through Originate, options q / qw / qB."""
    call = await repos.calls.find(call_id, user)
    if call is None:
        raise NotFound("no such call")
    if call.ended_at is not None:
        raise InvalidInput("the call has ended")
    extension = body.extension or await repos.extensions.extension_of(call.pbx, user.id)
    if not extension:
        raise InvalidInput("you have no extension on this PBX: say which phone should ring (extension)")
    assert hub.commands is not None
    await hub.commands.spy(call.pbx, call.pbx_call_id, extension, body.mode)
    return Response(status_code=204)
