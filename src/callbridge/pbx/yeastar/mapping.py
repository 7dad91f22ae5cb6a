"""Turn Yeastar call and presence events into callbridge's normalized events.

One :class:`YeastarMapper` per PBX. It keeps the evidence seen for each call (every leg's
statuses in order, the CDR, a failure report, what the hub itself originated) and after each
input derives what can be said *from all evidence so far*, emitting each normalized event at
most once. Because the output is a function of the accumulated evidence and not of the order
it came in, duplicates change nothing and a CDR that overtakes the last ``BYE`` gives the same
call as one that follows it.

Rules worth knowing (reference §1.6):

- The end of a call is the 30012 CDR, but ``CallEnded`` waits until the member states agree
  the call is over (every leg ``BYE`` or a 30015), or until ``bye_wait`` has passed since the
  CDR. A call that is over without a CDR ends after ``cdr_wait`` from member states.
- API click-to-call rings the agent's extension first, alone, with no caller leg; the call's
  direction and far party are only known once the second leg appears (or from the CDR, or
  from what :meth:`YeastarMapper.note_originated` was told). A call that dies before the agent
  picks up is ``FAILED`` on the caller side: the customer was never rung, and the CDR's
  ``NO ANSWER`` must not be recorded as the customer's outcome.
- ``answered_by`` is the first extension that answered. An outbound call is answered by the
  far end: its answer is a ``CallAnswered`` without an extension, and the agent who placed it
  is ``CallStarted.placed_by``. Later transfers show as ``CallTransferred``/``CallAnswered``.
- Queues: 30011 names, in a member's ``call_path``, the queue (or IVR, ring group …) number the
  call passed; only numbers the admin listed as the PBX's queues count as queues. At the end of
  such a call the visit is derived from the legs on that path and the CDR's times (see
  :meth:`YeastarMapper._queue_events`): who answered, how long the caller waited, or that the
  caller gave up. Yeastar reports neither each unanswered ring nor why an unanswered caller
  left the queue, so those visits say ``rings_reported=False``.
- Times: the CDR is the PBX's own record. ``CallEnded`` carries its start (``time_start``, PBX
  local time), answer (end − ``talk_duration``) and end (start + ``call_duration``), so a call
  whose 30011s arrive late or all at once (webhook retries after an outage, a WebSocket
  reconnect, a backlog draining) still shows the ring and talk time the PBX measured.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TypedDict
from zoneinfo import ZoneInfo

from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    Event,
    HangupSide,
    Presence,
    PresenceChanged,
    QueueAgentRang,
    QueueCompleted,
    QueueConnected,
    QueueJoined,
    QueueLeft,
    QueueOutcome,
    RecordingAvailable,
    TransferKind,
    VoicemailLeft,
)
from callbridge.domain.numbers import NumberKind, parse_number
from callbridge.pbx.yeastar.payloads import (
    CallReport,
    CdrReport,
    EventType,
    ExtensionStatusReport,
    Member,
    MemberKind,
    MemberStatus,
    Payload,
)

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"[0-9]+")  # the numbers in a ``call_path`` (one, or several hops)

_CALLER_SIDE = frozenset({MemberStatus.ALERT, MemberStatus.ANSWERED})
_AGENT_PICKED_UP = frozenset(
    {MemberStatus.ALERT, MemberStatus.ANSWERED, MemberStatus.ANSWER, MemberStatus.HOLD}
)

_CDR_DISPOSITION = {
    "ANSWERED": Disposition.ANSWERED,
    "NO ANSWER": Disposition.MISSED,
    "NOANSWER": Disposition.MISSED,
    "BUSY": Disposition.BUSY,
    "VOICEMAIL": Disposition.VOICEMAIL,
    "FAILED": Disposition.FAILED,
}

_CDR_DIRECTION = {
    "inbound": Direction.INBOUND,
    "outbound": Direction.OUTBOUND,
    "internal": Direction.INTERNAL,
}


def failure_disposition(reason: str) -> Disposition:
    """30015 ``reason`` (typos and casing vary) → the far party's outcome."""
    text = reason.lower()
    if "busy" in text or "603" in text or "declin" in text:
        return Disposition.BUSY
    if text.startswith(("408", "480")) or "unavailable" in text or "temporatily" in text:
        return Disposition.MISSED
    return Disposition.FAILED


class _Ids(TypedDict):
    pbx: str
    call_id: str


class _Base(TypedDict):
    pbx: str
    at: datetime
    call_id: str


@dataclass
class _Leg:
    member: Member
    seen: dict[MemberStatus, int] = field(default_factory=dict)  # status → first sequence number
    paths: dict[str, int] = field(default_factory=dict)  # call_path → first sequence number

    def ever(self, statuses: frozenset[MemberStatus]) -> bool:
        return any(s in self.seen for s in statuses)

    @property
    def live(self) -> bool:
        return self.member.status is not MemberStatus.BYE


@dataclass(frozen=True)
class _Roles:
    direction: Direction
    from_number: str
    to_number: str
    originator: str  # extension that placed the call; "" when the caller is external


@dataclass
class _Call:
    call_id: str
    legs: dict[str, _Leg] = field(default_factory=dict)
    lone_ring_start: str = ""  # extension rung alone first: a PBX/API-originated call
    originated: tuple[str, str] | None = None  # (extension, callee) the hub dialled
    transfer_hint: TransferKind | None = None
    transfers: list[tuple[int, TransferKind, str, str]] = field(default_factory=list)  # (seq, kind, from, to)
    cdr: CdrReport | None = None
    cdr_at: datetime | None = None
    failure: str | None = None
    over_at: datetime | None = None
    last_activity: datetime = field(default_factory=lambda: datetime.now(UTC))
    emitted: set[str] = field(default_factory=set)
    ended: bool = False
    seq_at: dict[int, datetime] = field(default_factory=dict)  # report sequence → when it came

    def ext_legs(self) -> list[_Leg]:
        return [leg for leg in self.legs.values() if leg.member.kind is MemberKind.EXTENSION]

    def first_leg(self, kind: MemberKind) -> _Leg | None:
        return next((leg for leg in self.legs.values() if leg.member.kind is kind), None)

    @property
    def over_by_state(self) -> bool:
        return self.failure is not None or (
            bool(self.legs) and not any(leg.live for leg in self.legs.values())
        )


@dataclass(frozen=True)
class MapperSettings:
    default_region: str = "US"
    cdr_wait: timedelta = timedelta(seconds=20)
    bye_wait: timedelta = timedelta(seconds=10)
    stale_after: timedelta = timedelta(hours=6)
    remember_ended: int = 20_000
    pbx_timezone: str = "UTC"  # CDR ``time_start`` is the PBX's local time
    # The PBX's queues: (number, name) pairs. A call whose ``call_path`` names one of these
    # numbers passed that queue; any other number (an IVR, a ring group) is not a queue.
    queues: tuple[tuple[str, str], ...] = ()


class YeastarMapper:
    """Per-PBX state: feed it payloads with :meth:`feed`, call :meth:`tick` periodically."""

    def __init__(
        self,
        pbx: str,
        settings: MapperSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pbx = pbx
        self.settings = settings or MapperSettings()
        self._clock = clock
        self._tz: tzinfo = ZoneInfo(self.settings.pbx_timezone)
        self._queues = {number: name or number for number, name in self.settings.queues}
        self._calls: dict[str, _Call] = {}
        # Ended calls, newest last: call id → whether its CDR was seen. Only that, not the call:
        # a busy PBX's last 20,000 calls kept whole would be hundreds of thousands of objects
        # for the garbage collector to walk, and every full pass would stop the hub that long.
        self._ended: OrderedDict[str, bool] = OrderedDict()
        self._seq = 0
        self._presence: dict[str, Presence] = {}
        self._registered: dict[str, set[str]] = {}
        self._call_state: dict[str, str] = {}
        self._presence_status: dict[str, str] = {}

    # ----------------------------------------------------------------- inputs from the link
    def note_originated(self, call_id: str, extension: str, callee: str) -> list[Event]:
        """The hub dialled this call (``call/dial``): the agent's lone ringing leg is ours."""
        call = self._call(call_id)
        if call is None:
            return []
        call.originated = (extension, callee)
        return self._advance(call, self._clock())

    def note_transfer(self, call_id: str, kind: TransferKind) -> None:
        """The hub asked for a transfer: the next 30013 for this call is of this kind."""
        call = self._calls.get(call_id)
        if call is not None:
            call.transfer_hint = kind

    def feed(self, payload: Payload, now: datetime | None = None) -> list[Event]:
        """Apply one Yeastar payload; return the normalized events it makes true."""
        now = now or self._clock()
        if isinstance(payload, ExtensionStatusReport):
            return self._presence_event(payload, now)
        call = self._call(payload.call_id)
        if call is None:  # already ended: late duplicates and stragglers
            if isinstance(payload, CdrReport) and self._ended.get(payload.call_id) is False:
                # A CDR after the end: only its recording and its voicemail are new.
                self._ended[payload.call_id] = True
                late: list[Event] = []
                if payload.recording:
                    late.append(
                        RecordingAvailable(
                            pbx=self.pbx, at=now, call_id=payload.call_id, recording=payload.recording
                        )
                    )
                late.extend(self._voicemail(payload, now))
                return late
            return []
        call.last_activity = now
        if isinstance(payload, CdrReport):
            if call.cdr is None:
                call.cdr, call.cdr_at = payload, now
        else:
            self._apply_report(call, payload, now)
        if call.over_by_state and call.over_at is None:
            call.over_at = now
        return self._advance(call, now)

    def tick(self, now: datetime | None = None) -> list[Event]:
        """End calls whose CDR or final states never came. Call every few seconds."""
        now = now or self._clock()
        out: list[Event] = []
        for call in list(self._calls.values()):
            if now - call.last_activity >= self.settings.stale_after:
                log.warning("yeastar %s: call %s went silent; closing it", self.pbx, call.call_id)
                out.extend(self._advance(call, now, force_end=True))
            else:
                out.extend(self._advance(call, now))
        return out

    # ----------------------------------------------------------------- queries for call control
    def active_call_ids(self) -> list[str]:
        return list(self._calls)

    def members(self, call_id: str) -> tuple[Member, ...]:
        call = self._calls.get(call_id)
        return tuple(leg.member for leg in call.legs.values()) if call else ()

    def far_party_channel(self, call_id: str) -> str | None:
        """The channel to hang up or transfer: the external party if there is one, else the
        caller. (Hanging up any leg of a two-party call ends it; the trunk leg also ends
        queue and ring-group calls cleanly.)"""
        return pick_far_party(self.members(call_id))

    # ----------------------------------------------------------------- internals
    def _call(self, call_id: str) -> _Call | None:
        if call_id in self._ended:
            return None
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = _Call(call_id=call_id, last_activity=self._clock())
        return call

    def _apply_report(self, call: _Call, report: CallReport, now: datetime) -> None:
        self._seq += 1
        call.seq_at[self._seq] = now
        if report.type == EventType.CALL_TRANSFER:
            self._note_transfer(call, report, self._seq)
        if not call.legs and report.members:
            exts = [m for m in report.members if m.kind is MemberKind.EXTENSION]
            if len(exts) == len(report.members) and all(m.status is MemberStatus.RING for m in exts):
                # Nobody is calling: the PBX itself rings this extension (API click-to-call).
                call.lone_ring_start = exts[0].number
        for member in report.members:
            leg = call.legs.get(member.channel_id)
            if leg is None:
                leg = call.legs[member.channel_id] = _Leg(member=member)
            else:
                leg.member = member
            leg.seen.setdefault(member.status, self._seq)
            if member.call_path:
                leg.paths.setdefault(member.call_path, self._seq)
        if report.type == EventType.CALL_FAILED:
            call.failure = report.reason or "failed"

    def _note_transfer(self, call: _Call, report: CallReport, seq: int) -> None:
        before = {ch for ch, leg in call.legs.items() if leg.live}
        talking = [
            leg.member.number
            for leg in call.ext_legs()
            if leg.ever(frozenset({MemberStatus.ANSWER, MemberStatus.ANSWERED}))
            and leg.member.channel_id in before
        ]
        new = [
            m for m in report.members if m.channel_id not in call.legs and m.status is not MemberStatus.BYE
        ]
        if not new:
            return
        target = new[0]
        to = target.number if target.kind is MemberKind.EXTENSION else self._norm(target.to_number)
        from_ext = next((n for n in talking if n != to), "")
        if call.transfer_hint is not None:
            kind = call.transfer_hint
            call.transfer_hint = None
        else:
            # The event does not say; a target that is already talking was consulted first.
            kind = TransferKind.ATTENDED if target.status is MemberStatus.ANSWER else TransferKind.BLIND
        if not any(t[1:] == (kind, from_ext, to) for t in call.transfers):
            call.transfers.append((seq, kind, from_ext, to))

    def _norm(self, raw: str) -> str:
        if not raw:
            return ""
        number = parse_number(raw, self.settings.default_region)
        return raw if number.kind is NumberKind.INVALID else number.key

    def _is_extension(self, raw: str) -> bool:
        return bool(raw) and parse_number(raw, self.settings.default_region).is_extension

    def _originator(self, call: _Call) -> str | None:
        """Extension that placed the call, ``""`` if the caller is external, None if unknown."""
        if call.originated is not None:
            return call.originated[0]
        if call.first_leg(MemberKind.INBOUND) is not None:
            return ""
        for leg in call.ext_legs():
            if leg.member.number != call.lone_ring_start and leg.ever(_CALLER_SIDE):
                return leg.member.number
        if call.lone_ring_start:
            lone = call.lone_ring_start
            others = [leg for leg in call.legs.values() if leg.member.number != lone or leg.member.is_trunk]
            lone_legs = [leg for leg in call.ext_legs() if leg.member.number == lone]
            if others or any(leg.ever(_CALLER_SIDE) for leg in lone_legs):
                return lone
        if call.cdr is not None:
            if call.cdr.call_type == "inbound":
                return ""
            if self._is_extension(call.cdr.call_from):
                return call.cdr.call_from
        return None

    def _roles(self, call: _Call) -> _Roles | None:
        inbound = call.first_leg(MemberKind.INBOUND)
        if inbound is not None:
            return _Roles(
                Direction.INBOUND,
                self._norm(inbound.member.from_number),
                self._norm(inbound.member.to_number),
                "",
            )
        originator = self._originator(call)
        outbound = call.first_leg(MemberKind.OUTBOUND)
        if outbound is not None and (originator is not None or not call.lone_ring_start):
            caller = originator or self._norm(outbound.member.from_number)
            return _Roles(Direction.OUTBOUND, caller, self._norm(outbound.member.to_number), caller)
        if originator:
            callee = next(
                (leg for leg in call.ext_legs() if leg.member.number != originator),
                None,
            )
            if callee is not None:
                to = callee.member.call_path or callee.member.number
                return _Roles(Direction.INTERNAL, originator, to, originator)
        if call.originated is not None:
            extension, target = call.originated
            direction = Direction.INTERNAL if self._is_extension(target) else Direction.OUTBOUND
            return _Roles(direction, extension, self._norm(target), extension)
        if call.cdr is not None:
            cdr = call.cdr
            guessed = Direction.INTERNAL if self._is_extension(cdr.call_from) else Direction.INBOUND
            return _Roles(
                _CDR_DIRECTION.get(cdr.call_type, guessed),
                self._norm(cdr.call_from),
                self._norm(cdr.call_to),
                originator or "",
            )
        return None

    def _fallback_roles(self, call: _Call) -> _Roles:
        exts = call.ext_legs()
        first = exts[0].member.number if exts else ""
        return _Roles(Direction.OUTBOUND, first, "", first)

    def _answerers(self, call: _Call, roles: _Roles) -> list[tuple[int, str]]:
        """Extensions that answered, each with the sequence number of its first answer."""
        ranked: list[tuple[int, str]] = []
        if roles.direction is Direction.OUTBOUND:
            seqs = [
                leg.seen[MemberStatus.ANSWER]
                for leg in call.legs.values()
                if leg.member.kind is MemberKind.OUTBOUND and MemberStatus.ANSWER in leg.seen
            ]
            seqs += [
                leg.seen[MemberStatus.ANSWERED]
                for leg in call.ext_legs()
                if leg.member.number == roles.originator and MemberStatus.ANSWERED in leg.seen
            ]
            if seqs:
                ranked.append((min(seqs), ""))  # the far end answered, not one of ours
        for leg in call.ext_legs():
            if leg.member.number == roles.originator or MemberStatus.ANSWER not in leg.seen:
                continue
            ranked.append((leg.seen[MemberStatus.ANSWER], leg.member.number))
        out: list[tuple[int, str]] = []
        for seq, number in sorted(ranked):
            if all(number != n for _, n in out):
                out.append((seq, number))
        return out

    def _agent_leg_failed(self, call: _Call, roles: _Roles) -> bool:
        """Click-to-call died at the agent's own phone: the far party was never dialled."""
        if not roles.originator or roles.originator not in (
            call.lone_ring_start,
            call.originated[0] if call.originated else "",
        ):
            return False
        mine = [leg for leg in call.ext_legs() if leg.member.number == roles.originator]
        others = [leg for leg in call.legs.values() if leg not in mine]
        return not others and not any(leg.ever(_AGENT_PICKED_UP) for leg in mine)

    def _hangup_side(self, call: _Call, roles: _Roles, answered: bool) -> HangupSide:
        caller: list[_Leg] = []
        callee: list[_Leg] = []
        for leg in call.legs.values():
            m = leg.member
            is_caller = (roles.direction is Direction.INBOUND and m.kind is MemberKind.INBOUND) or (
                roles.direction is not Direction.INBOUND
                and m.kind is MemberKind.EXTENSION
                and m.number == roles.originator
            )
            if is_caller:
                caller.append(leg)
            elif not answered or leg.ever(frozenset({MemberStatus.ANSWER})):
                callee.append(leg)
        first_caller = min(
            (leg.seen[MemberStatus.BYE] for leg in caller if MemberStatus.BYE in leg.seen), default=None
        )
        first_callee = min(
            (leg.seen[MemberStatus.BYE] for leg in callee if MemberStatus.BYE in leg.seen), default=None
        )
        if first_caller is None and first_callee is None:
            return HangupSide.UNKNOWN
        if first_callee is None or (first_caller is not None and first_caller < first_callee):
            return HangupSide.CALLER
        if first_caller is None or first_callee < first_caller:
            return HangupSide.CALLEE
        return HangupSide.UNKNOWN

    def _emit(self, call: _Call, key: str, event: Event, out: list[Event]) -> None:
        if key not in call.emitted:
            call.emitted.add(key)
            out.append(event)

    def _advance(self, call: _Call, now: datetime, *, force_end: bool = False) -> list[Event]:
        out: list[Event] = []
        if call.ended:
            return out
        end_due = force_end or self._end_due(call, now)
        roles = self._roles(call)
        if roles is None:
            if not end_due:
                return out
            log.warning("yeastar %s: call %s ended before its parties were known", self.pbx, call.call_id)
            roles = self._fallback_roles(call)
        base = _Base(pbx=self.pbx, at=now, call_id=call.call_id)
        self._emit(
            call,
            "started",
            CallStarted(
                **base,
                direction=roles.direction,
                from_number=roles.from_number,
                to_number=roles.to_number,
                placed_by=roles.originator if roles.direction is not Direction.INBOUND else "",
            ),
            out,
        )
        # Emit in the order things happened (sequence of the report that showed them), so a
        # transfer comes before the target's ringing even when both are derived late.
        pending: list[tuple[int, int, str, Event]] = []
        for seq, kind, from_ext, to in call.transfers:
            event: Event = CallTransferred(**base, transfer=kind, from_extension=from_ext, to=to)
            pending.append((seq, 0, f"transfer:{kind}:{from_ext}:{to}", event))
        for leg in call.ext_legs():
            number = leg.member.number
            if number and number != roles.originator and MemberStatus.RING in leg.seen:
                ring = CallRinging(**base, extension=number)
                pending.append((leg.seen[MemberStatus.RING], 1, f"ringing:{number}", ring))
        ranked = self._answerers(call, roles)
        for seq, number in ranked:
            pending.append((seq, 2, f"answered:{number}", CallAnswered(**base, extension=number)))
        for _, _, key, event in sorted(pending, key=lambda p: (p[0], p[1])):
            self._emit(call, key, event, out)
        answerers = [number for _, number in ranked]
        if not end_due:
            return out
        out.extend(self._end(call, roles, answerers, now))
        return out

    def _end_due(self, call: _Call, now: datetime) -> bool:
        s = self.settings
        if call.cdr is not None:
            if call.over_by_state or not call.legs:
                return True
            return call.cdr_at is not None and now - call.cdr_at >= s.bye_wait
        return call.over_at is not None and now - call.over_at >= s.cdr_wait

    def _end(self, call: _Call, roles: _Roles, answerers: list[str], now: datetime) -> list[Event]:
        out: list[Event] = []
        base = _Base(pbx=self.pbx, at=now, call_id=call.call_id)
        answered_by = ""
        if self._agent_leg_failed(call, roles):
            disposition, side = Disposition.FAILED, HangupSide.CALLER
        else:
            if call.cdr is not None and call.cdr.status in _CDR_DISPOSITION:
                disposition = _CDR_DISPOSITION[call.cdr.status]
            elif call.failure is not None:
                disposition = failure_disposition(call.failure)
            else:
                disposition = Disposition.ANSWERED if answerers else Disposition.MISSED
            if disposition is Disposition.ANSWERED:
                answered_by = answerers[0] if answerers else self._cdr_answerer(call, roles)
                if answered_by:
                    self._emit(
                        call, f"answered:{answered_by}", CallAnswered(**base, extension=answered_by), out
                    )
            side = self._hangup_side(call, roles, bool(answerers))
            if call.failure is not None and side is HangupSide.UNKNOWN:
                side = HangupSide.SYSTEM
        measured = self._cdr_times(call.cdr, disposition)
        for key, event in self._queue_events(call, roles, disposition, answerers, measured, now):
            self._emit(call, key, event, out)
        if measured is not None:
            started, answered, ended = measured
            ending = CallEnded(
                pbx=self.pbx,
                at=ended,
                call_id=call.call_id,
                disposition=disposition,
                hangup_side=side,
                answered_by=answered_by,
                started_at=started,
                answered_at=answered,
            )
        else:
            ending = CallEnded(**base, disposition=disposition, hangup_side=side, answered_by=answered_by)
        self._emit(call, "ended", ending, out)
        call.ended = True
        self._calls.pop(call.call_id, None)
        self._ended[call.call_id] = call.cdr is not None
        while len(self._ended) > self.settings.remember_ended:
            self._ended.popitem(last=False)
        out.extend(self._recording(call, now))
        if call.cdr is not None:
            out.extend(self._voicemail(call.cdr, ending.at))
        return out

    def _queue_events(
        self,
        call: _Call,
        roles: _Roles,
        disposition: Disposition,
        answerers: list[str],
        measured: tuple[datetime, datetime | None, datetime] | None,
        now: datetime,
    ) -> list[tuple[str, Event]]:
        """The caller's visits to the PBX's listed queues, derived at the end of the call.

        Entry: when the first report naming the queue's number came, placed on the CDR's clock
        (the CDR's start plus how long after the call's first report it came: reports that
        arrive late or all at once put it at the call's start). Answer: the first member leg
        on that path to answer (the CDR's answer time when that agent is who answered the
        call). Unanswered there: ``left`` when the call was answered elsewhere afterwards or
        went to voicemail (a timeout or a failover: Yeastar does not say which), else
        ``abandoned`` at the call's end."""
        if not self._queues:
            return []
        first_seq: dict[str, int] = {}
        for leg in call.legs.values():
            for path, seq in leg.paths.items():
                for number in _NUMBER.findall(path):
                    if number in self._queues:
                        first_seq[number] = min(first_seq.get(number, seq), seq)
        if not first_seq:
            return []
        start_at = min(call.seq_at.values(), default=now)
        # Without a CDR: when the members' states said the call was over (not when it ended
        # here, up to ``cdr_wait`` later).
        end = measured[2] if measured is not None else min(call.over_at or now, now)

        def clock(seq: int | None) -> datetime:
            at = call.seq_at.get(seq, now) if seq is not None else now
            if measured is None:
                return at
            after = timedelta(seconds=round((at - start_at).total_seconds()))  # the CDR's precision
            return min(max(measured[0] + after, measured[0]), end)

        ids = _Ids(pbx=self.pbx, call_id=call.call_id)
        out: list[tuple[str, Event]] = []
        for number, seq in sorted(first_seq.items(), key=lambda item: item[1]):
            queue = self._queues[number]
            members = [
                leg
                for leg in call.ext_legs()
                if leg.member.number != roles.originator
                and any(number in _NUMBER.findall(path) for path in leg.paths)
            ]
            entered = clock(seq)
            answered = sorted(
                (leg.seen[MemberStatus.ANSWER], leg) for leg in members if MemberStatus.ANSWER in leg.seen
            )
            if answered:
                answer_seq, leg = answered[0]
                agent = leg.member.number
                alone = answerers == [agent]
                if measured is not None and measured[1] is not None and answerers[:1] == [agent]:
                    answer_at = measured[1]
                else:
                    answer_at = clock(answer_seq)
                entered = min(entered, answer_at)
                if (alone and measured is not None) or MemberStatus.BYE not in leg.seen:
                    done_at = end
                else:
                    done_at = max(clock(leg.seen[MemberStatus.BYE]), answer_at)
                wait = _whole_seconds(entered, answer_at)
                talk = _whole_seconds(answer_at, done_at)
            out.append(
                (
                    f"queue:{number}:joined",
                    QueueJoined(**ids, at=entered, queue=queue, rings_reported=False),
                )
            )
            rung = sorted(
                (leg.seen[MemberStatus.RING], leg.member.number)
                for leg in members
                if MemberStatus.RING in leg.seen
            )
            for ring_seq, extension in rung:
                out.append(
                    (
                        f"queue:{number}:rang:{extension}",
                        QueueAgentRang(
                            **ids, at=max(clock(ring_seq), entered), queue=queue, extension=extension
                        ),
                    )
                )
            if answered:
                out.append(
                    (
                        f"queue:{number}:connected",
                        QueueConnected(**ids, at=answer_at, queue=queue, extension=agent, wait_seconds=wait),
                    )
                )
                out.append(
                    (
                        f"queue:{number}:completed",
                        QueueCompleted(
                            **ids,
                            at=done_at,
                            queue=queue,
                            extension=agent,
                            wait_seconds=wait,
                            talk_seconds=talk,
                        ),
                    )
                )
                continue
            elsewhere = [
                leg.seen[MemberStatus.ANSWER]
                for leg in call.ext_legs()
                if leg not in members
                and MemberStatus.ANSWER in leg.seen
                and leg.seen[MemberStatus.ANSWER] > seq
            ]
            if elsewhere or disposition is Disposition.VOICEMAIL:
                outcome = QueueOutcome.LEFT
                left_at = clock(min(elsewhere)) if elsewhere else end
            else:
                outcome, left_at = QueueOutcome.ABANDONED, end
            left_at = max(left_at, entered)
            out.append(
                (
                    f"queue:{number}:left",
                    QueueLeft(
                        **ids,
                        at=left_at,
                        queue=queue,
                        outcome=outcome,
                        wait_seconds=_whole_seconds(entered, left_at),
                    ),
                )
            )
        return out

    def _cdr_times(
        self, cdr: CdrReport | None, disposition: Disposition
    ) -> tuple[datetime, datetime | None, datetime] | None:
        """(start, answer, end) as the PBX measured them, from its CDR; None without one."""
        if cdr is None or not cdr.time_start:
            return None
        try:
            local = datetime.strptime(cdr.time_start[:19], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            log.warning(
                "yeastar %s: call %s: CDR time_start %r unreadable", self.pbx, cdr.call_id, cdr.time_start
            )
            return None
        started = local.replace(tzinfo=self._tz).astimezone(UTC)
        total = max(0, cdr.call_duration)
        ended = started + timedelta(seconds=total)
        talk = min(max(0, cdr.talk_duration), total)
        answered = ended - timedelta(seconds=talk) if disposition is Disposition.ANSWERED else None
        return started, answered, ended

    def _cdr_answerer(self, call: _Call, roles: _Roles) -> str:
        if roles.direction is Direction.OUTBOUND:
            return ""  # the far end answered
        cdr = call.cdr
        if cdr is not None and self._is_extension(cdr.call_to):
            return cdr.call_to
        return ""

    def _recording(self, call: _Call, now: datetime) -> list[Event]:
        out: list[Event] = []
        if call.cdr is not None and call.cdr.recording:
            self._emit(
                call,
                "recording",
                RecordingAvailable(pbx=self.pbx, at=now, call_id=call.call_id, recording=call.cdr.recording),
                out,
            )
        return out

    def _voicemail(self, cdr: CdrReport, at: datetime) -> list[Event]:
        """A CDR with status ``VOICEMAIL``: the caller left a message in the called extension's
        mailbox (the PBX keeps the audio; the hub fetches it through the OpenAPI)."""
        if cdr.status != "VOICEMAIL" or not self._is_extension(cdr.call_to):
            return []
        return [
            VoicemailLeft(
                pbx=self.pbx,
                at=at,
                call_id=cdr.call_id,
                mailbox=cdr.call_to.strip(),
                caller_number=self._norm(cdr.call_from.strip()),
            )
        ]

    # ----------------------------------------------------------------- presence
    def _presence_event(self, report: ExtensionStatusReport, now: datetime) -> list[Event]:
        ext = report.extension
        status = report.status.strip().lower()
        if report.type == EventType.REGISTRATION_STATUS:
            devices = self._registered.setdefault(ext, set())
            kind = report.kind.lower() or "sip"
            if status == "registered":
                devices.add(kind)
            else:
                devices.discard(kind)
        elif report.type == EventType.EXTENSION_CALL_STATUS:
            self._call_state[ext] = status
        else:
            self._presence_status[ext] = status
        presence = self._effective_presence(ext)
        if self._presence.get(ext) is presence:
            return []
        self._presence[ext] = presence
        return [PresenceChanged(pbx=self.pbx, at=now, extension=ext, presence=presence)]

    def _effective_presence(self, ext: str) -> Presence:
        devices = self._registered.get(ext)
        if devices is not None and not devices:
            return Presence.OFFLINE
        call_state = self._call_state.get(ext, "")
        if call_state == "ringing":
            return Presence.RINGING
        if call_state == "busy":
            return Presence.ON_CALL
        status = self._presence_status.get(ext, "")
        if status == "do_not_disturb":
            return Presence.DO_NOT_DISTURB
        if status in ("away", "lunch", "business_trip", "off_work"):
            # Registered but not at the desk: the user set lunch, a trip, off work or away.
            return Presence.AWAY
        if status or call_state == "idle" or devices:
            return Presence.AVAILABLE
        return Presence.UNKNOWN


def _whole_seconds(start: datetime, end: datetime) -> int:
    return max(0, round((end - start).total_seconds()))


def _first_bye(legs: list[_Leg]) -> int | None:
    return min((leg.seen[MemberStatus.BYE] for leg in legs if MemberStatus.BYE in leg.seen), default=None)


def pick_far_party(members: tuple[Member, ...]) -> str | None:
    """The live channel that represents the other party: a trunk leg, else the caller leg."""
    live = [m for m in members if m.status is not MemberStatus.BYE]
    for m in live:
        if m.is_trunk:
            return m.channel_id
    for m in live:
        if m.status in _CALLER_SIDE:
            return m.channel_id
    return live[0].channel_id if live else None
