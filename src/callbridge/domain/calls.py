"""The call record: one row of the call log, built from the normalized events of one call.

The record is a pure fold over events. Every field is chosen by a rule that does not depend on
arrival order (earliest start, earliest answer, the latest authoritative end, …, ties broken by
the event's idempotency key), so:

- applying the same event twice changes nothing (its key is remembered), and
- applying the same events in any order yields the same record (an end before an answer, a
  ringing after an answer, a transfer before the start).

Direction decides which side is the external party: the caller of an inbound call, the callee
of an outbound call, nobody on an internal call. "Answered by" names an extension of ours only
when one of ours answered: an outbound call is answered by the outside party, and the extension
that placed it is "placed by".

Times: when the end event carries the times the PBX measured itself (a Yeastar CDR), the start,
answer and end are the PBX's, not the times the events arrived: events that arrive late or all
at once (a webhook backlog draining) still give the ring and talk time the PBX measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from callbridge.domain.errors import InvalidEvent
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    Event,
    HangupSide,
    QueueEvent,
    RecordingAvailable,
    TransferKind,
)
from callbridge.domain.queues import QueueVisit, fold_visits

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, order=True)
class Stamp:
    """When an event happened and its key: the total order used to pick winners."""

    at: datetime
    key: str


@dataclass(frozen=True, slots=True)
class Transfer:
    at: datetime
    kind: TransferKind
    from_extension: str
    to: str


@dataclass(frozen=True, slots=True)
class Ring:
    at: datetime
    extension: str


@dataclass(frozen=True, slots=True)
class Recording:
    at: datetime
    reference: str


def _earliest(current: tuple[Stamp, _T] | None, stamp: Stamp, value: _T) -> tuple[Stamp, _T]:
    return (stamp, value) if current is None or stamp < current[0] else current


def _latest(current: tuple[Stamp, _T] | None, stamp: Stamp, value: _T) -> tuple[Stamp, _T]:
    return (stamp, value) if current is None or stamp > current[0] else current


def _whole_seconds(start: datetime | None, end: datetime | None) -> int:
    if start is None or end is None:
        return 0
    # Clocks of two PBX legs can disagree by a little: never report a negative duration.
    return max(0, round((end - start).total_seconds()))


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What the call log knows about one call. Build with :meth:`new` and :meth:`apply`."""

    pbx: str
    call_id: str
    first_event_at: datetime | None = None
    start: tuple[Stamp, CallStarted] | None = None
    answer: tuple[Stamp, CallAnswered] | None = None
    end: tuple[Stamp, CallEnded] | None = None
    rings: frozenset[Ring] = frozenset()
    transfers: frozenset[tuple[Stamp, Transfer]] = frozenset()
    recordings: frozenset[tuple[Stamp, Recording]] = frozenset()
    queue_events: frozenset[QueueEvent] = frozenset()
    applied: frozenset[str] = frozenset()

    @classmethod
    def new(cls, pbx: str, call_id: str) -> CallRecord:
        return cls(pbx=pbx, call_id=call_id)

    # -- folding -----------------------------------------------------------------------------

    def apply(self, event: Event) -> CallRecord:
        """Return the record with ``event`` applied; ``self`` if the event was seen already."""
        if not isinstance(event, CallEvent):
            raise InvalidEvent(f"{event.kind} is not about a call")
        if event.pbx != self.pbx or event.call_id != self.call_id:
            raise InvalidEvent(
                f"event for {event.pbx}/{event.call_id} applied to call {self.pbx}/{self.call_id}"
            )
        key = event.idempotency_key
        if key in self.applied:
            return self
        stamp = Stamp(event.at, key)
        changes: dict[str, object] = {
            "applied": self.applied | {key},
            "first_event_at": event.at if self.first_event_at is None else min(self.first_event_at, event.at),
        }
        if isinstance(event, CallStarted):
            changes["start"] = _earliest(self.start, stamp, event)
        elif isinstance(event, CallRinging):
            changes["rings"] = self.rings | {Ring(event.at, event.extension)}
        elif isinstance(event, CallAnswered):
            changes["answer"] = _earliest(self.answer, stamp, event)
        elif isinstance(event, CallTransferred):
            transfer = Transfer(event.at, event.transfer, event.from_extension, event.to)
            changes["transfers"] = self.transfers | {(stamp, transfer)}
        elif isinstance(event, CallEnded):
            # A PBX that re-reports the end (a retry with a corrected outcome) is believed last.
            changes["end"] = _latest(self.end, stamp, event)
        elif isinstance(event, RecordingAvailable):
            changes["recordings"] = self.recordings | {(stamp, Recording(event.at, event.recording))}
        elif isinstance(event, QueueEvent):
            changes["queue_events"] = self.queue_events | {event}
        else:  # pragma: no cover - a new event type must be given a rule here
            raise InvalidEvent(f"no call-log rule for {event.kind}")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def takes(self, event: CallEvent) -> bool:
        """Whether the call still takes ``event``. Once it has ended, an event stamped after its
        end is refused: a call does not ring or start again after it ended, so such an event is a
        replay or a resend that the PBX (or an agent, or an attacker with old signed bodies)
        stamped anew, and it must neither reopen the call nor change its times. A recording
        may still come; events stamped up to the end (arriving late, out of order) are taken."""
        if self.end is None or isinstance(event, RecordingAvailable):
            return True
        return event.at <= self.end[1].at

    @classmethod
    def fold(cls, pbx: str, call_id: str, events: Iterable[Event]) -> CallRecord:
        record = cls.new(pbx, call_id)
        for event in events:
            record = record.apply(event)
        return record

    # -- what the call log shows -------------------------------------------------------------

    @property
    def direction(self) -> Direction | None:
        return self.start[1].direction if self.start else None

    @property
    def from_number(self) -> str:
        return self.start[1].from_number if self.start else ""

    @property
    def to_number(self) -> str:
        return self.start[1].to_number if self.start else ""

    @property
    def from_name(self) -> str:
        return self.start[1].from_name if self.start else ""

    @property
    def external_number(self) -> str:
        """The party outside the PBX: the caller when inbound, the callee when outbound."""
        if self.direction is Direction.INBOUND:
            return self.from_number
        if self.direction is Direction.OUTBOUND:
            return self.to_number
        return ""

    @property
    def internal_extension(self) -> str:
        """The extension that made an outbound or internal call."""
        if self.direction in (Direction.OUTBOUND, Direction.INTERNAL):
            return self.from_number
        return ""

    @property
    def placed_by_extension(self) -> str:
        """The extension of ours that placed the call: what the driver said, else (events
        stored before drivers said it) the caller of an outbound or internal call when that
        caller is an extension. Empty for inbound calls."""
        if self.start is None or self.direction is Direction.INBOUND:
            return ""
        if self.start[1].placed_by:
            return self.start[1].placed_by
        caller = self.internal_extension
        return caller if caller.isdigit() else ""

    @property
    def _measured(self) -> CallEnded | None:
        """The end event when it carries the PBX's own measurement of the call."""
        if self.end is not None and self.end[1].started_at is not None:
            return self.end[1]
        return None

    @property
    def started_at(self) -> datetime | None:
        measured = self._measured
        if measured is not None:
            return measured.started_at
        # A call starts no later than the first thing we heard of it, even when its
        # "started" event is lost or its clock is late.
        return self.first_event_at

    @property
    def disposition(self) -> Disposition | None:
        """The outcome; ``None`` while the call is in progress."""
        return self.end[1].disposition if self.end else None

    @property
    def is_complete(self) -> bool:
        return self.end is not None

    @property
    def hangup_side(self) -> HangupSide:
        return self.end[1].hangup_side if self.end else HangupSide.UNKNOWN

    @property
    def ended_at(self) -> datetime | None:
        return self.end[1].at if self.end else None

    @property
    def _talked(self) -> bool:
        return self.disposition in (None, Disposition.ANSWERED)

    @property
    def answered_at(self) -> datetime | None:
        if not self._talked:
            return None
        measured = self._measured
        if measured is not None and measured.answered_at is not None:
            return measured.answered_at
        if self.answer is not None:
            return self.answer[1].at
        return None

    @property
    def answered_by_extension(self) -> str:
        """Who took the call: the first extension to answer, else the end event's word for it.

        Empty when the call ended without a conversation (missed, busy, voicemail …) and for
        outbound calls: the outside party answered those (see :attr:`placed_by_extension`)."""
        if not self._talked or self.direction is Direction.OUTBOUND:
            return ""
        if self.answer is not None:
            return self.answer[1].extension
        return self.end[1].answered_by if self.end else ""

    @property
    def ring_seconds(self) -> int:
        """From the start until someone answered or, unanswered, until the end."""
        until = self.answered_at if self.answered_at is not None else self.ended_at
        return _whole_seconds(self.started_at, until)

    @property
    def talk_seconds(self) -> int:
        if self.disposition is not Disposition.ANSWERED:
            return 0
        return _whole_seconds(self.answered_at, self.ended_at)

    @property
    def rang_extensions(self) -> tuple[str, ...]:
        """Extensions that rang, in order of their first ring."""
        seen: dict[str, None] = {}
        for ring in sorted(self.rings, key=lambda r: (r.at, r.extension)):
            seen.setdefault(ring.extension, None)
        return tuple(seen)

    @property
    def transfer_list(self) -> tuple[Transfer, ...]:
        return tuple(t for _, t in sorted(self.transfers, key=lambda item: item[0]))

    @property
    def transferred_to(self) -> str:
        """Where the last transfer sent the call; empty when it was never transferred."""
        transfers = self.transfer_list
        return transfers[-1].to if transfers else ""

    @property
    def recording(self) -> str:
        """The first recording's reference (most calls have one); empty when none."""
        items = self.recording_list
        return items[0].reference if items else ""

    @property
    def recording_list(self) -> tuple[Recording, ...]:
        return tuple(r for _, r in sorted(self.recordings, key=lambda item: item[0]))

    @property
    def participants(self) -> tuple[str, ...]:
        """Every extension that took part: made it, rang, answered, transferred or received it."""
        seen: dict[str, None] = {}
        candidates = [self.internal_extension, self.placed_by_extension, *self.rang_extensions]
        if self.answer is not None:
            candidates.append(self.answer[1].extension)
        if self.end is not None:
            candidates.append(self.end[1].answered_by)
        if self.direction is Direction.INTERNAL:
            candidates.append(self.to_number)
        for transfer in self.transfer_list:
            candidates += [transfer.from_extension, transfer.to]
        for item in candidates:
            if item and item.isdigit():
                seen.setdefault(item, None)
        return tuple(seen)

    @property
    def queue_visits(self) -> tuple[QueueVisit, ...]:
        """The caller's stays in queues, in order (see :mod:`callbridge.domain.queues`)."""
        return tuple(fold_visits(self.queue_events)) if self.queue_events else ()

    def summary(self) -> CallSummary:
        return CallSummary(
            pbx=self.pbx,
            call_id=self.call_id,
            direction=self.direction,
            from_number=self.from_number,
            to_number=self.to_number,
            from_name=self.from_name,
            external_number=self.external_number,
            disposition=self.disposition,
            hangup_side=self.hangup_side,
            answered_by_extension=self.answered_by_extension,
            placed_by_extension=self.placed_by_extension,
            started_at=self.started_at,
            answered_at=self.answered_at,
            ended_at=self.ended_at,
            ring_seconds=self.ring_seconds,
            talk_seconds=self.talk_seconds,
            transferred_to=self.transferred_to,
            recording=self.recording,
            participants=self.participants,
            queue_visits=self.queue_visits,
        )


@dataclass(frozen=True, slots=True)
class CallSummary:
    """The flat view of a record, what the store keeps as columns and the API shows."""

    pbx: str
    call_id: str
    direction: Direction | None
    from_number: str
    to_number: str
    from_name: str
    external_number: str
    disposition: Disposition | None
    hangup_side: HangupSide
    answered_by_extension: str
    placed_by_extension: str
    started_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    ring_seconds: int
    talk_seconds: int
    transferred_to: str
    recording: str
    participants: tuple[str, ...]
    queue_visits: tuple[QueueVisit, ...] = ()

    @property
    def queue(self) -> QueueVisit | None:
        """The last queue the caller was in (where the call was answered or given up)."""
        return self.queue_visits[-1] if self.queue_visits else None
