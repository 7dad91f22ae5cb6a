"""The normalized call events that every PBX driver emits.

Everything after a driver (call log, screen pop, analytics) sees only these. Each event is a
frozen dataclass with a UTC-aware time and a stable ``idempotency_key``: the same event built
twice (a webhook retry, an agent resend after a reconnect) has the same key, so consumers can
drop duplicates.

Numbers: external parties are E.164 strings (``+14155550100``); extensions are their bare
digits (``1001``). A driver normalizes with :mod:`callbridge.domain.numbers` before emitting.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from callbridge.domain.errors import InvalidEvent


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class Disposition(StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    BUSY = "busy"
    FAILED = "failed"
    ABANDONED = "abandoned"
    VOICEMAIL = "voicemail"


class HangupSide(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    SYSTEM = "system"
    UNKNOWN = "unknown"


class TransferKind(StrEnum):
    BLIND = "blind"
    ATTENDED = "attended"


class QueueOutcome(StrEnum):
    """How a caller's stay in a queue ended (see docs/queues.md for each definition)."""

    ANSWERED = "answered"
    ABANDONED = "abandoned"  # the caller hung up while waiting
    TIMEOUT = "timeout"  # the queue's (or Queue()'s) time limit ran out
    FULL = "full"  # refused: the queue had its maximum of callers
    JOIN_EMPTY = "join_empty"  # refused: no member could take calls
    LEAVE_EMPTY = "leave_empty"  # put out while waiting: no member could take calls any more
    LEFT = "left"  # left another way (a key pressed, a transfer away, unknown)


class MemberState(StrEnum):
    """What a queue member's phone is doing (pause is told apart, see QueueMemberChanged)."""

    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class Presence(StrEnum):
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    ON_HOLD = "on_hold"
    AWAY = "away"
    DO_NOT_DISTURB = "dnd"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive values are refused, not guessed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidEvent("event times must be timezone-aware")
    return value.astimezone(UTC)


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    """The dataclass fields of an event class, in order (asked for on every (de)serialization)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}

# Fields added to an event after its first release. Left out of ``to_dict`` while they hold their
# default, so an event that does not use them keeps the JSON (and the idempotency key) it had:
# a resend of an event stored before they existed is still recognised as a duplicate.
_ADDED_FIELDS: dict[str, object] = {
    "placed_by": "",
    "started_at": None,
    "answered_at": None,
    "rings_reported": True,
}
# Datetime fields besides ``at`` (optional: ``None`` when unknown).
_TIME_FIELDS = frozenset({"started_at", "answered_at"})
# Whole numbers (seconds, positions) and flags of the queue events.
_INT_FIELDS = frozenset(
    {"position", "wait_seconds", "ring_seconds", "talk_seconds", "ring_ms", "duration_seconds"}
)
_BOOL_FIELDS = frozenset({"paused", "rings_reported"})


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of all normalized events: which PBX, when."""

    kind: ClassVar[str] = "event"
    pbx: str
    at: datetime

    def __post_init__(self) -> None:
        if not self.pbx:
            raise InvalidEvent(f"{self.kind}: pbx must not be empty")
        object.__setattr__(self, "at", utc(self.at))

    @functools.cached_property
    def canonical_json(self) -> str:
        """:meth:`to_dict` as compact JSON with sorted keys (computed once per event)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @functools.cached_property
    def idempotency_key(self) -> str:
        """A stable digest of the event's kind and every field (computed once per event)."""
        return hashlib.sha256(self.canonical_json.encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if name in _ADDED_FIELDS and value == _ADDED_FIELDS[name]:
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


@dataclass(frozen=True, kw_only=True)
class CallEvent(Event):
    """An event about one call (conversation), identified by the PBX's call id."""

    call_id: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.call_id:
            raise InvalidEvent(f"{self.kind}: call_id must not be empty")


@dataclass(frozen=True, kw_only=True)
class CallStarted(CallEvent):
    kind: ClassVar[str] = "call_started"
    direction: Direction
    from_number: str
    to_number: str
    from_name: str = ""
    # The extension of ours that placed the call (outbound and internal calls); "" when the
    # caller is outside or the PBX did not say.
    placed_by: str = ""


@dataclass(frozen=True, kw_only=True)
class CallRinging(CallEvent):
    kind: ClassVar[str] = "call_ringing"
    extension: str


@dataclass(frozen=True, kw_only=True)
class CallAnswered(CallEvent):
    kind: ClassVar[str] = "call_answered"
    extension: str


@dataclass(frozen=True, kw_only=True)
class CallTransferred(CallEvent):
    kind: ClassVar[str] = "call_transferred"
    transfer: TransferKind
    from_extension: str
    to: str


@dataclass(frozen=True, kw_only=True)
class CallEnded(CallEvent):
    """The authoritative end of a call, with its outcome."""

    kind: ClassVar[str] = "call_ended"
    disposition: Disposition
    hangup_side: HangupSide = HangupSide.UNKNOWN
    answered_by: str = ""
    # When the PBX measured the call itself (a CDR), the start and answer it measured; ``at``
    # is then the end it measured. They beat the times other events of the call arrived at.
    started_at: datetime | None = None
    answered_at: datetime | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("started_at", "answered_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value))


@dataclass(frozen=True, kw_only=True)
class RecordingAvailable(CallEvent):
    kind: ClassVar[str] = "recording_available"
    recording: str


@dataclass(frozen=True, kw_only=True)
class VoicemailLeft(CallEvent):
    """The caller of this call left a message in ``mailbox`` (the called extension's mailbox),
    as a PBX that keeps the audio itself says (Yeastar's CDR status ``VOICEMAIL``); the hub
    fetches the audio. ``at`` is when the message was left, as near as the PBX tells."""

    kind: ClassVar[str] = "voicemail_left"
    mailbox: str
    caller_number: str
    caller_name: str = ""
    duration_seconds: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mailbox:
            raise InvalidEvent(f"{self.kind}: mailbox must not be empty")


@dataclass(frozen=True, kw_only=True)
class PresenceChanged(Event):
    kind: ClassVar[str] = "presence_changed"
    extension: str
    presence: Presence


@dataclass(frozen=True, kw_only=True)
class QueueEvent(CallEvent):
    """An event about one caller's stay in a queue (``call_id`` is the caller's call)."""

    queue: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.queue:
            raise InvalidEvent(f"{self.kind}: queue must not be empty")


@dataclass(frozen=True, kw_only=True)
class QueueJoined(QueueEvent):
    """The caller started waiting in the queue. ``rings_reported`` is False when the PBX does
    not report each ring of a member that went unanswered (Yeastar): the visit's rings not
    answered are then unknown, not none."""

    kind: ClassVar[str] = "queue_joined"
    position: int = 0
    rings_reported: bool = True


@dataclass(frozen=True, kw_only=True)
class QueueAgentRang(QueueEvent):
    kind: ClassVar[str] = "queue_agent_rang"
    extension: str


@dataclass(frozen=True, kw_only=True)
class QueueAgentMissed(QueueEvent):
    """A member's phone rang for this caller and nobody picked up (``AgentRingNoAnswer``)."""

    kind: ClassVar[str] = "queue_agent_missed"
    extension: str
    ring_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class QueueConnected(QueueEvent):
    """A member answered: the caller waited ``wait_seconds`` in the queue."""

    kind: ClassVar[str] = "queue_connected"
    extension: str
    wait_seconds: int = 0
    ring_seconds: int = 0


@dataclass(frozen=True, kw_only=True)
class QueueCompleted(QueueEvent):
    """The conversation a queue connected has ended (``reason``: caller | agent | transfer)."""

    kind: ClassVar[str] = "queue_completed"
    extension: str
    wait_seconds: int = 0
    talk_seconds: int = 0
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class QueueLeft(QueueEvent):
    """The caller left the queue without being answered there (or was never let in)."""

    kind: ClassVar[str] = "queue_left"
    outcome: QueueOutcome
    wait_seconds: int = 0
    position: int = 0


@dataclass(frozen=True, kw_only=True)
class QueueMemberChanged(Event):
    """A queue member's state: ``change`` is status | added | removed | paused | unpaused."""

    kind: ClassVar[str] = "queue_member_changed"
    queue: str
    extension: str
    change: str
    state: MemberState = MemberState.UNKNOWN
    paused: bool = False
    reason: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.queue or not self.extension:
            raise InvalidEvent(f"{self.kind}: queue and extension must not be empty")


QUEUE_CALL_EVENTS: tuple[type[QueueEvent], ...] = (
    QueueJoined,
    QueueAgentRang,
    QueueAgentMissed,
    QueueConnected,
    QueueCompleted,
    QueueLeft,
)

_ALL_TYPES: tuple[type[Event], ...] = (
    CallStarted,
    CallRinging,
    CallAnswered,
    CallTransferred,
    CallEnded,
    RecordingAvailable,
    VoicemailLeft,
    PresenceChanged,
    *QUEUE_CALL_EVENTS,
    QueueMemberChanged,
)
EVENT_TYPES: dict[str, type[Event]] = {cls.kind: cls for cls in _ALL_TYPES}

_ENUM_FIELDS: dict[str, type[StrEnum]] = {
    "direction": Direction,
    "disposition": Disposition,
    "hangup_side": HangupSide,
    "transfer": TransferKind,
    "presence": Presence,
    "outcome": QueueOutcome,
    "state": MemberState,
}


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """Rebuild an event from :meth:`Event.to_dict` output; raises :class:`InvalidEvent`."""
    kind = data.get("kind")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidEvent(f"unknown event kind {kind!r}")
    names = _field_names(cls)
    values: dict[str, Any] = {}
    try:
        for name in names:
            if name not in data:
                continue
            value = data[name]
            if name == "at":
                value = datetime.fromisoformat(str(value))
            elif name in _TIME_FIELDS:
                value = None if value is None else datetime.fromisoformat(str(value))
            elif name in _ENUM_FIELDS:
                value = _ENUM_FIELDS[name](value)
            elif name in _INT_FIELDS:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InvalidEvent(f"{kind}: field {name} must be a whole number")
            elif name in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise InvalidEvent(f"{kind}: field {name} must be true or false")
            elif not isinstance(value, str):
                raise InvalidEvent(f"{kind}: field {name} must be a string")
            values[name] = value
        return cls(**values)
    except InvalidEvent:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"{kind}: {exc}") from exc
