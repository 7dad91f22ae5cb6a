"""Queues: a caller's stays in queues (visits), and the figures a call centre runs by.

Both the call log (AMI events through the tracker) and Asterisk's own ``queue_log`` feed the
same normalized queue events into the same functions here, so the two can be compared figure
by figure (docs/queues.md defines each one).

A *visit* is one stay of one caller in one queue: it opens with ``QueueJoined`` and ends with
an answer (``QueueConnected``, then ``QueueCompleted`` once the talk is over) or with
``QueueLeft`` (abandoned, timed out, put out, refused). Events are applied in time order, so a
batch that arrives shuffled gives the same visits; an event whose visit never opened (the
tracker missed the join, e.g. across a reconnect) opens one dated from its own wait time:
it is counted, not dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from callbridge.domain.errors import InvalidInput
from callbridge.domain.events import (
    QueueAgentMissed,
    QueueAgentRang,
    QueueCompleted,
    QueueConnected,
    QueueEvent,
    QueueJoined,
    QueueLeft,
    QueueMemberChanged,
    QueueOutcome,
)

DEFAULT_SL_SECONDS = 20
DEFAULT_SHORT_ABANDON_SECONDS = 5
MAX_SL_SECONDS = 3600
# Refusals at the door: the caller never waited in the queue, so they are not "offered".
REFUSED = frozenset({QueueOutcome.FULL, QueueOutcome.JOIN_EMPTY})

# Same-second events are applied in the order a visit lives them.
_RANK: dict[type[QueueEvent], int] = {
    QueueJoined: 0,
    QueueAgentRang: 1,
    QueueAgentMissed: 2,
    QueueConnected: 3,
    QueueCompleted: 4,
    QueueLeft: 5,
}


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Per-queue figures' parameters: service level target T and the short-abandon threshold."""

    sl_seconds: int = DEFAULT_SL_SECONDS
    short_abandon_seconds: int = DEFAULT_SHORT_ABANDON_SECONDS
    wrapup_seconds: int = 0  # added to each answered call's talk time in the handle time

    def __post_init__(self) -> None:
        for name in ("sl_seconds", "short_abandon_seconds", "wrapup_seconds"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_SL_SECONDS:
                raise InvalidInput(f"{name} must be between 0 and {MAX_SL_SECONDS} seconds")


@dataclass(frozen=True, slots=True)
class QueueVisit:
    queue: str
    entered_at: datetime
    outcome: QueueOutcome | None = None  # None: still waiting (or talking, until answered)
    wait_seconds: int = 0
    agent: str = ""
    talk_seconds: int = 0
    completed: bool = False
    rang: tuple[str, ...] = ()
    missed: tuple[str, ...] = ()  # one entry per ring not answered (an agent may repeat)
    # False when the PBX does not report unanswered rings (Yeastar): ``missed`` is then unknown.
    rings_reported: bool = True

    @property
    def open(self) -> bool:
        return self.outcome is None or (self.outcome is QueueOutcome.ANSWERED and not self.completed)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "queue": self.queue,
            "entered_at": self.entered_at.isoformat(),
            "outcome": self.outcome.value if self.outcome else None,
            "wait_seconds": self.wait_seconds,
            "agent": self.agent,
            "talk_seconds": self.talk_seconds,
            "completed": self.completed,
            "rang": list(self.rang),
            "missed": list(self.missed),
        }
        if not self.rings_reported:  # left out when true: visits stored before it keep their JSON
            out["rings_reported"] = False
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> QueueVisit:
        outcome = data.get("outcome")
        return cls(
            queue=str(data["queue"]),
            entered_at=datetime.fromisoformat(str(data["entered_at"])),
            outcome=QueueOutcome(str(outcome)) if outcome else None,
            wait_seconds=int(str(data.get("wait_seconds") or 0)),
            agent=str(data.get("agent") or ""),
            talk_seconds=int(str(data.get("talk_seconds") or 0)),
            completed=bool(data.get("completed")),
            rang=tuple(str(x) for x in _list(data.get("rang"))),
            missed=tuple(str(x) for x in _list(data.get("missed"))),
            rings_reported=data.get("rings_reported", True) is not False,
        )


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def visits_to_json(visits: Sequence[QueueVisit]) -> str | None:
    return json.dumps([v.to_dict() for v in visits], separators=(",", ":")) if visits else None


def visits_from_json(text: str | None) -> list[QueueVisit]:
    if not text:
        return []
    try:
        return [QueueVisit.from_dict(item) for item in json.loads(text)]
    except (ValueError, KeyError, TypeError):
        return []


def _seconds(start: datetime, end: datetime) -> int:
    return max(0, round((end - start).total_seconds()))


def fold_visits(events: Iterable[QueueEvent]) -> list[QueueVisit]:
    """One caller's visits, in the order they began (see the module docstring)."""
    ordered = sorted(events, key=lambda e: (e.at, _RANK.get(type(e), 9), e.idempotency_key))
    visits: list[QueueVisit] = []
    open_at: dict[str, int] = {}  # queue → index of its open visit

    def current(event: QueueEvent, wait: int = 0) -> int:
        index = open_at.get(event.queue)
        if index is None or not visits[index].open:
            visits.append(QueueVisit(queue=event.queue, entered_at=event.at - timedelta(seconds=wait)))
            index = open_at[event.queue] = len(visits) - 1
        return index

    for event in ordered:
        if isinstance(event, QueueJoined):
            index = open_at.get(event.queue)
            if index is None or not visits[index].open or visits[index].outcome is not None:
                visits.append(
                    QueueVisit(queue=event.queue, entered_at=event.at, rings_reported=event.rings_reported)
                )
                open_at[event.queue] = len(visits) - 1
            elif not event.rings_reported:
                visits[index] = replace(visits[index], rings_reported=False)
            continue
        if isinstance(event, QueueAgentRang):
            i = current(event)
            if event.extension and event.extension not in visits[i].rang:
                visits[i] = replace(visits[i], rang=(*visits[i].rang, event.extension))
        elif isinstance(event, QueueAgentMissed):
            i = current(event)
            visits[i] = replace(visits[i], missed=(*visits[i].missed, event.extension))
        elif isinstance(event, QueueConnected):
            i = current(event, event.wait_seconds)
            visits[i] = replace(
                visits[i],
                outcome=QueueOutcome.ANSWERED,
                agent=event.extension,
                wait_seconds=event.wait_seconds,
            )
        elif isinstance(event, QueueCompleted):
            i = current(event, event.wait_seconds + event.talk_seconds)
            visits[i] = replace(
                visits[i],
                outcome=QueueOutcome.ANSWERED,
                agent=visits[i].agent or event.extension,
                wait_seconds=visits[i].wait_seconds or event.wait_seconds,
                talk_seconds=event.talk_seconds,
                completed=True,
            )
        elif isinstance(event, QueueLeft):
            i = current(event, event.wait_seconds)
            if visits[i].outcome is not None:
                continue  # answered already: a late leave changes nothing
            wait = event.wait_seconds or _seconds(visits[i].entered_at, event.at)
            visits[i] = replace(visits[i], outcome=event.outcome, wait_seconds=wait)
    return visits


# -- figures --------------------------------------------------------------------------------------


@dataclass(slots=True)
class AgentFigures:
    extension: str
    answered: int = 0
    ring_no_answer: int = 0
    talk_seconds: int = 0
    logged_in_seconds: int = 0
    paused_seconds_by_reason: dict[str, int] = field(default_factory=dict)
    # False when the agent took part in a visit whose PBX does not report unanswered rings
    # (Yeastar): ``ring_no_answer`` is then not a measurement.
    rings_measured: bool = True
    member_logged: bool = False  # the member log has this agent (logged-in and paused time)

    @property
    def avg_handle_seconds(self) -> float:
        return round(self.talk_seconds / self.answered, 1) if self.answered else 0.0


@dataclass(slots=True)
class QueueFigures:
    queue: str
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timed_out: int = 0
    full: int = 0
    join_empty: int = 0
    leave_empty: int = 0
    other_left: int = 0
    answered_within_sl: int = 0
    answer_rate: float = 0.0
    service_level: float = 0.0
    avg_answer_seconds: float = 0.0
    avg_wait_seconds: float = 0.0
    max_wait_seconds: int = 0
    avg_handle_seconds: float = 0.0
    agents: dict[str, AgentFigures] = field(default_factory=dict)
    # False when some visit came from a PBX that reports neither unanswered rings nor why an
    # unanswered caller left (Yeastar): timed_out / full / join_empty / leave_empty are then
    # not measured (such visits count as abandoned or other_left, see docs/queues.md).
    exits_measured: bool = True

    def as_dict(self) -> dict[str, object]:
        return {
            "queue": self.queue,
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "short_abandoned": self.short_abandoned,
            "timed_out": self.timed_out,
            "full": self.full,
            "join_empty": self.join_empty,
            "leave_empty": self.leave_empty,
            "other_left": self.other_left,
            "answer_rate": self.answer_rate,
            "service_level": self.service_level,
            "avg_answer_seconds": self.avg_answer_seconds,
            "avg_wait_seconds": self.avg_wait_seconds,
            "max_wait_seconds": self.max_wait_seconds,
            "avg_handle_seconds": self.avg_handle_seconds,
        }


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _mean(values: Sequence[int]) -> float:
    return round(sum(values) / len(values), 1) if values else 0.0


def queue_figures(
    queue: str,
    visits: Iterable[QueueVisit],
    settings: QueueSettings,
    member_events: Iterable[QueueMemberChanged] = (),
    start: datetime | None = None,
    end: datetime | None = None,
) -> QueueFigures:
    """The figures of ``queue`` over visits that ended (visits still open are left out); member
    time (logged in, paused by reason) is clipped to [start, end) when both are given."""
    f = QueueFigures(queue=queue)
    waits: list[int] = []
    answer_waits: list[int] = []
    handles: list[int] = []
    for v in visits:
        if v.queue != queue or v.outcome is None:
            continue
        if not v.rings_reported:
            f.exits_measured = False
            for ext in {v.agent, *v.rang} - {""}:
                _agent(f, ext).rings_measured = False
        for ext in v.missed:
            _agent(f, ext).ring_no_answer += 1
        f.max_wait_seconds = max(f.max_wait_seconds, v.wait_seconds)
        outcome = v.outcome
        if outcome in REFUSED:
            if outcome is QueueOutcome.FULL:
                f.full += 1
            else:
                f.join_empty += 1
            continue
        if outcome is QueueOutcome.ABANDONED and v.wait_seconds < settings.short_abandon_seconds:
            f.short_abandoned += 1
            continue
        f.offered += 1
        waits.append(v.wait_seconds)
        if outcome is QueueOutcome.ANSWERED:
            f.answered += 1
            answer_waits.append(v.wait_seconds)
            if v.wait_seconds <= settings.sl_seconds:
                f.answered_within_sl += 1
            if v.agent:
                agent = _agent(f, v.agent)
                agent.answered += 1
                agent.talk_seconds += v.talk_seconds
            handles.append(v.talk_seconds + settings.wrapup_seconds)
        elif outcome is QueueOutcome.ABANDONED:
            f.abandoned += 1
        elif outcome is QueueOutcome.TIMEOUT:
            f.timed_out += 1
        elif outcome is QueueOutcome.LEAVE_EMPTY:
            f.leave_empty += 1
        else:
            f.other_left += 1
    f.answer_rate = _ratio(f.answered, f.offered)
    f.service_level = _ratio(f.answered_within_sl, f.offered)
    f.avg_answer_seconds = _mean(answer_waits)
    f.avg_wait_seconds = _mean(waits)
    f.avg_handle_seconds = _mean(handles)
    if start is not None and end is not None:
        for ext, (logged, paused) in member_time(member_events, queue, start, end).items():
            agent = _agent(f, ext)
            agent.logged_in_seconds = logged
            agent.paused_seconds_by_reason = paused
            agent.member_logged = True
    return f


def _agent(f: QueueFigures, extension: str) -> AgentFigures:
    agent = f.agents.get(extension)
    if agent is None:
        agent = f.agents[extension] = AgentFigures(extension)
    return agent


def member_time(
    events: Iterable[QueueMemberChanged], queue: str, start: datetime, end: datetime
) -> dict[str, tuple[int, dict[str, int]]]:
    """Per member of ``queue``: seconds logged in and seconds paused by reason within [start,
    end). A member is logged in from its first event that is not a removal (a static member
    reported by a status) until removed; paused from a pause until an unpause or removal. The
    state at ``start`` comes from the events before it."""
    by_member: dict[str, list[QueueMemberChanged]] = {}
    for e in events:
        if e.queue == queue:
            by_member.setdefault(e.extension, []).append(e)
    out: dict[str, tuple[int, dict[str, int]]] = {}
    for ext, items in by_member.items():
        items.sort(key=lambda e: (e.at, e.idempotency_key))
        out[ext] = _member_time(items, start, end)
    return out


def _clip(a: datetime, b: datetime, start: datetime, end: datetime) -> float:
    return max(0.0, (min(b, end) - max(a, start)).total_seconds())


def _member_time(
    items: list[QueueMemberChanged], start: datetime, end: datetime
) -> tuple[int, dict[str, int]]:
    logged_since: datetime | None = None
    paused_since: datetime | None = None
    reason = ""
    logged = 0.0
    paused: dict[str, float] = {}
    for e in items:
        if e.at >= end:
            break
        ends = e.change == "removed" or not e.paused or e.reason != reason
        if ends and paused_since is not None:
            paused[reason] = paused.get(reason, 0.0) + _clip(paused_since, e.at, start, end)
            paused_since = None
        if e.change == "removed":
            if logged_since is not None:
                logged += _clip(logged_since, e.at, start, end)
                logged_since = None
            continue
        if logged_since is None:
            logged_since = e.at
        if e.paused and paused_since is None:
            paused_since, reason = e.at, e.reason
    if paused_since is not None:
        paused[reason] = paused.get(reason, 0.0) + _clip(paused_since, end, start, end)
    if logged_since is not None:
        logged += _clip(logged_since, end, start, end)
    return round(logged), {r: round(v) for r, v in sorted(paused.items()) if round(v) > 0}
