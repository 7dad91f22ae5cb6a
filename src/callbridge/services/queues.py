"""Queues as people see them: the live board behind the wallboard, and the figures per period.

:class:`QueueBoard` runs in the process that ingests a PBX's events. After each stored batch
it knows every caller waiting, every member's state (paused with which reason, since when) and
today's figures per queue; the hub publishes its snapshot on :data:`WALLBOARD_TOPIC` after
commit, and every worker's wallboard sockets get it. Today's figures are kept by adding each
call's visits and taking back the ones it replaced, so a resent or re-folded event never counts
twice; they are seeded from the call log when the board first serves a day.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from callbridge.domain.events import (
    CallEnded,
    Event,
    MemberState,
    QueueCompleted,
    QueueConnected,
    QueueJoined,
    QueueLeft,
    QueueMemberChanged,
    QueueOutcome,
)
from callbridge.domain.queues import (
    REFUSED,
    QueueSettings,
    QueueVisit,
)
from callbridge.domain.times import zone

WALLBOARD_TOPIC = "wallboard"
MAX_EARLY = 10_000  # calls previewed and not stored yet (bounded: a lost store never piles up)


def new_wallboard_token() -> tuple[str, str]:
    """A read-only wallboard link's secret and the hash kept of it (the secret is shown once)."""
    token = secrets.token_urlsafe(24)
    return token, wallboard_token_hash(token)


def wallboard_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def wallboard_url(public_url: str, token: str) -> str:
    base = public_url.rstrip("/") or "http://<this hub>"
    return f"{base}/wallboard/tv/{token}"


@dataclass(slots=True)
class Member:
    queue: str
    extension: str
    name: str
    state: MemberState
    paused: bool
    reason: str
    since: datetime  # when its current state (paused / on a call / …) began


@dataclass(slots=True)
class Today:
    offered: int = 0
    answered: int = 0
    answered_within_sl: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timed_out: int = 0

    def add(self, visit: QueueVisit, settings: QueueSettings, sign: int) -> None:
        outcome = visit.outcome
        if outcome is None or outcome in REFUSED:
            return
        if outcome is QueueOutcome.ABANDONED and visit.wait_seconds < settings.short_abandon_seconds:
            self.short_abandoned += sign
            return
        self.offered += sign
        if outcome is QueueOutcome.ANSWERED:
            self.answered += sign
            if visit.wait_seconds <= settings.sl_seconds:
                self.answered_within_sl += sign
        elif outcome is QueueOutcome.ABANDONED:
            self.abandoned += sign
        elif outcome is QueueOutcome.TIMEOUT:
            self.timed_out += sign


@dataclass(slots=True)
class QueueBoard:
    """Live queue state for the wallboard (see the module docstring)."""

    time_zone: str = "UTC"
    settings: dict[str, QueueSettings] = field(default_factory=dict)
    _calls: dict[str, tuple[QueueVisit, ...]] = field(default_factory=dict)  # "pbx/call" → visits
    _ended: set[str] = field(default_factory=set)
    _members: dict[tuple[str, str, str], Member] = field(default_factory=dict)  # (pbx, queue, ext)
    _today: dict[str, Today] = field(default_factory=dict)
    day: str = ""  # the local date today's figures are for ("" until seeded)
    version: int = 0
    # Seen on the PBX link but not stored yet: "pbx/call" → queue → since when the caller waits
    # (None: left). The board shows these at once; the stored visits take over once they agree.
    _early: dict[str, dict[str, datetime | None]] = field(default_factory=dict)

    def day_start(self, now: datetime) -> datetime:
        local = now.astimezone(zone(self.time_zone))
        return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)

    def needs_seed(self, now: datetime) -> bool:
        return self.day != now.astimezone(zone(self.time_zone)).date().isoformat()

    def seed(
        self,
        now: datetime,
        visits: Mapping[str, Sequence[QueueVisit]],
        members: Iterable[QueueMemberChanged],
        settings: Mapping[str, QueueSettings],
    ) -> None:
        """Start the day: the visits of calls since midnight (by call key) and member events."""
        self.day = now.astimezone(zone(self.time_zone)).date().isoformat()
        self.settings = dict(settings)
        self._today = {}
        start = self.day_start(now)
        # Calls from before midnight keep only their waiting callers.
        self._calls = {k: v for k, v in self._calls.items() if any(x.outcome is None for x in v)}
        for key, items in visits.items():
            self._set_visits(key, tuple(items), start)
        for event in members:
            self.member_changed(event)
        self.version += 1

    def _settings(self, queue: str) -> QueueSettings:
        return self.settings.get(queue) or QueueSettings()

    def _set_visits(self, key: str, visits: tuple[QueueVisit, ...], start: datetime) -> None:
        for old in self._calls.get(key, ()):
            if old.entered_at >= start:
                self._today.setdefault(old.queue, Today()).add(old, self._settings(old.queue), -1)
        for new in visits:
            if new.entered_at >= start:
                self._today.setdefault(new.queue, Today()).add(new, self._settings(new.queue), +1)
        self._calls[key] = visits

    def preview(self, events: Iterable[Event]) -> bool:
        """Events as they leave the PBX link, before the call log stores them: callers joining
        and leaving and members' states show at once (today's counts wait for the store, where a
        resent event is known as one). Returns whether the board changed."""
        changed = False
        for e in events:
            if isinstance(e, QueueMemberChanged):
                changed |= self.member_changed(e)
            elif isinstance(e, QueueJoined):
                self._early.setdefault(f"{e.pbx}/{e.call_id}", {})[e.queue] = e.at
                changed = True
            elif isinstance(e, QueueLeft | QueueConnected | QueueCompleted):
                self._early.setdefault(f"{e.pbx}/{e.call_id}", {})[e.queue] = None
                changed = True
            elif isinstance(e, CallEnded) and f"{e.pbx}/{e.call_id}" in self._early:
                self._early[f"{e.pbx}/{e.call_id}"] = {}
                changed = True
        if len(self._early) > MAX_EARLY:
            for key in list(self._early)[: len(self._early) - MAX_EARLY]:
                del self._early[key]
        if changed:
            self.version += 1
        return changed

    def _settle(self, key: str, visits: tuple[QueueVisit, ...], ended: bool) -> None:
        """Drop what the preview said about a call once the stored visits say the same."""
        early = self._early.get(key)
        if early is None:
            return
        if ended:
            del self._early[key]
            return
        waiting = {v.queue for v in visits if v.outcome is None}
        for queue, since in list(early.items()):
            if (since is not None) == (queue in waiting):
                del early[queue]
        if not early:
            del self._early[key]

    def call_changed(self, key: str, visits: Sequence[QueueVisit], ended: bool, now: datetime) -> bool:
        """A call's visits after an event was stored; returns whether the board changed."""
        items = tuple(visits)
        self._settle(key, items, ended)
        if not items and key not in self._calls:
            return False
        if self._calls.get(key) == items and (key in self._ended) == ended:
            return False
        self._set_visits(key, items, self.day_start(now))
        if ended:
            self._ended.add(key)
        self.version += 1
        return True

    def member_changed(self, event: QueueMemberChanged) -> bool:
        key = (event.pbx, event.queue, event.extension)
        if event.change == "removed":
            self.version += 1
            return self._members.pop(key, None) is not None
        old = self._members.get(key)
        since = event.at
        if old is not None and old.paused == event.paused and _busy(old.state) == _busy(event.state):
            since = old.since  # the same kind of state goes on
        self._members[key] = Member(
            event.queue,
            event.extension,
            event.name or (old.name if old else ""),
            event.state,
            event.paused,
            event.reason,
            since,
        )
        self.version += 1
        return True

    def forget_finished(self) -> None:
        """Drop ended calls with nothing waiting (they already count in today's figures)."""
        for key in [k for k in self._ended if k in self._calls]:
            if not any(v.outcome is None for v in self._calls[key]):
                del self._calls[key]
        self._ended.clear()

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """What a wallboard shows (JSON-ready); waits and pauses are given as start times, so
        the screen ticks them on its own."""
        waiting: dict[str, list[str]] = {}
        for key, visits in self._calls.items():
            if key in self._ended:
                continue
            told = self._early.get(key, {})
            for v in visits:
                if v.outcome is None and v.queue not in told:
                    waiting.setdefault(v.queue, []).append(v.entered_at.isoformat())
        for seen in self._early.values():
            for queue, joined in seen.items():
                if joined is not None:
                    waiting.setdefault(queue, []).append(joined.isoformat())
        queues = sorted(set(self._today) | set(waiting) | {m.queue for m in self._members.values()})
        rows = []
        for name in queues:
            t = self._today.get(name, Today())
            since = sorted(waiting.get(name, []))
            rows.append(
                {
                    "name": name,
                    "waiting": len(since),
                    "longest_since": since[0] if since else None,
                    "offered": t.offered,
                    "answered": t.answered,
                    "abandoned": t.abandoned,
                    "short_abandoned": t.short_abandoned,
                    "timed_out": t.timed_out,
                    "service_level": round(t.answered_within_sl / t.offered, 4) if t.offered else None,
                    "abandon_rate": round(t.abandoned / t.offered, 4) if t.offered else None,
                    "sl_seconds": self._settings(name).sl_seconds,
                }
            )
        agents: dict[tuple[str, str], dict[str, Any]] = {}
        for (pbx, _queue, ext), m in sorted(self._members.items()):
            status = _status(m)
            found = agents.get((pbx, ext))
            queues_of = [*found["queues"], m.queue] if found is not None else [m.queue]
            if found is None or _RANK[status] > _RANK[found["status"]]:
                agents[(pbx, ext)] = {
                    "pbx": pbx,
                    "extension": ext,
                    "name": m.name,
                    "status": status,
                    "reason": m.reason if m.paused else "",
                    "since": m.since.isoformat(),
                }
            agents[(pbx, ext)]["queues"] = queues_of
        listed = sorted(agents.values(), key=lambda a: (a["extension"], a["pbx"]))
        counts = {s: sum(1 for a in listed if a["status"] == s) for s in _RANK}
        all_offered = sum(t.offered for t in self._today.values())
        all_sl = sum(t.answered_within_sl for t in self._today.values())
        all_abandoned = sum(t.abandoned for t in self._today.values())
        longest = min((str(r["longest_since"]) for r in rows if r["longest_since"]), default=None)
        return {
            "type": "wallboard",
            "now": now.isoformat(),
            "version": self.version,
            "day": self.day,
            "waiting": sum(int(str(r["waiting"])) for r in rows),
            "longest_since": longest,
            "service_level": round(all_sl / all_offered, 4) if all_offered else None,
            "abandon_rate": round(all_abandoned / all_offered, 4) if all_offered else None,
            "agents": counts,
            "agent_list": listed,
            "queues": rows,
        }


_RANK = {"offline": 0, "available": 1, "on_call": 2, "paused": 3}


def _busy(state: MemberState) -> str:
    if state in (MemberState.ON_CALL, MemberState.RINGING):
        return "busy"
    return state.value


def _status(m: Member) -> str:
    if m.state is MemberState.OFFLINE:
        return "offline"
    if m.paused:
        return "paused"
    if m.state is MemberState.ON_CALL:
        return "on_call"
    return "available"


def parse_period(start: str, end: str, now: datetime, *, max_days: int = 400) -> tuple[datetime, datetime]:
    """``from`` / ``to`` query values (ISO dates or times; a date is midnight UTC) → a period;
    defaults to today (UTC). Raises ValueError with words for an impossible period."""

    def one(text: str, default: datetime) -> datetime:
        if not text:
            return default
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{text[:40]!r} is not a date or time (use 2026-12-06 or 2026-12-06T08:00Z)"
            ) from None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    lo = one(start, midnight)
    hi = one(end, lo + timedelta(days=1) if start else midnight + timedelta(days=1))
    if hi <= lo:
        raise ValueError("'to' must be after 'from'")
    if hi - lo > timedelta(days=max_days):
        raise ValueError(f"a period may span at most {max_days} days")
    return lo, hi
