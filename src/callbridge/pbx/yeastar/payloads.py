"""Typed views of Yeastar P-Series event payloads (the ``msg`` of an event envelope).

Yeastar JSON never leaves ``pbx/yeastar``: the webhook and WebSocket paths parse into these
frozen dataclasses, and :mod:`.mapping` turns them into normalized events. Parsing is lenient
where the PBX is known to be inconsistent (``" "`` vs ``""`` blanks, ``members: null``,
``Inbound``/``inbound``) and strict where a wrong guess would corrupt a call log (missing
``call_id``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from callbridge.domain.errors import InvalidEvent


class EventType(IntEnum):
    """Event ids this driver understands (reference §1.5)."""

    REGISTRATION_STATUS = 30007
    EXTENSION_CALL_STATUS = 30008
    PRESENCE_STATUS = 30009
    TRUNK_STATUS = 30010
    CALL_STATUS = 30011
    NEW_CDR = 30012
    CALL_TRANSFER = 30013
    CALL_FORWARD = 30014
    CALL_FAILED = 30015
    INBOUND_INVITATION = 30016


CALL_EVENT_TYPES = frozenset(
    {
        EventType.CALL_STATUS,
        EventType.CALL_TRANSFER,
        EventType.CALL_FORWARD,
        EventType.CALL_FAILED,
        EventType.INBOUND_INVITATION,
    }
)

#: What the link subscribes to (WebSocket) and asks for (webhook settings).
DEFAULT_TOPICS: tuple[int, ...] = (30007, 30008, 30009, 30011, 30012, 30013, 30014, 30015, 30016)


class MemberKind(StrEnum):
    EXTENSION = "extension"
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MemberStatus(StrEnum):
    ALERT = "ALERT"  # this member is the caller and hears ringback
    RING = "RING"  # this member is being called
    ANSWERED = "ANSWERED"  # this member's (outgoing) call was answered
    ANSWER = "ANSWER"  # this member answered and is talking
    HOLD = "HOLD"
    BYE = "BYE"
    EARLYMEDIA = "EARLYMEDIA"  # outbound leg got 183: the far end is ringing
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Member:
    """One leg of a call. ``number`` is the extension for extension legs; trunk legs carry
    ``from_number``/``to_number`` as the PBX saw them (not yet normalized)."""

    kind: MemberKind
    channel_id: str
    status: MemberStatus
    number: str = ""
    from_number: str = ""
    to_number: str = ""
    trunk_name: str = ""
    call_path: str = ""

    @property
    def is_trunk(self) -> bool:
        return self.kind is not MemberKind.EXTENSION


@dataclass(frozen=True, slots=True)
class CallReport:
    """30011 / 30013 / 30014 / 30015 / 30016 and ``call/query`` rows."""

    type: int
    call_id: str
    members: tuple[Member, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CdrReport:
    """30012 New CDR: the authoritative end of a call."""

    call_id: str
    time_start: str
    call_from: str
    call_to: str
    call_duration: int
    talk_duration: int
    status: str  # upper-cased: ANSWERED, NO ANSWER, BUSY, VOICEMAIL, …
    call_type: str  # lower-cased: inbound, outbound, internal
    recording: str = ""
    src_trunk_name: str = ""
    dst_trunk_name: str = ""
    did_number: str = ""
    agent_ring_time: int = 0


@dataclass(frozen=True, slots=True)
class ExtensionStatusReport:
    """30007 (registration), 30008 (call state), 30009 (presence)."""

    type: int
    extension: str
    status: str
    kind: str = ""


Payload = CallReport | CdrReport | ExtensionStatusReport


def blank(value: Any) -> str:
    """Yeastar sends both ``""`` and ``" "`` for "nothing"; normalize to ``""``."""
    if value is None:
        return ""
    return str(value).strip()


def _int(value: Any) -> int:
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def parse_member(item: Any) -> Member:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise InvalidEvent("a call member must be an object with exactly one key")
    ((key, body),) = item.items()
    try:
        kind = MemberKind(str(key).lower())
    except ValueError as exc:
        raise InvalidEvent(f"unknown call member kind {key!r}") from exc
    if not isinstance(body, Mapping):
        raise InvalidEvent(f"call member {key!r} must be an object")
    raw_status = blank(body.get("member_status")).upper()
    try:
        status = MemberStatus(raw_status)
    except ValueError:
        status = MemberStatus.UNKNOWN
    channel = blank(body.get("channel_id"))
    if not channel:
        raise InvalidEvent("call member without channel_id")
    return Member(
        kind=kind,
        channel_id=channel,
        status=status,
        number=blank(body.get("number")),
        from_number=blank(body.get("from")),
        to_number=blank(body.get("to")),
        trunk_name=blank(body.get("trunk_name")),
        call_path=blank(body.get("call_path")),
    )


def parse_members(raw: Any) -> tuple[Member, ...]:
    if raw is None:  # 30015 is observed with "members": null
        return ()
    if not isinstance(raw, list):
        raise InvalidEvent("members must be a list")
    return tuple(parse_member(item) for item in raw)


def parse_call_report(event_type: int, msg: Mapping[str, Any]) -> CallReport:
    call_id = blank(msg.get("call_id"))
    if not call_id:
        raise InvalidEvent(f"event {event_type} without call_id")
    return CallReport(
        type=event_type,
        call_id=call_id,
        members=parse_members(msg.get("members")),
        reason=blank(msg.get("reason")),
    )


def parse_cdr(msg: Mapping[str, Any]) -> CdrReport:
    call_id = blank(msg.get("call_id"))
    if not call_id:
        raise InvalidEvent("CDR without call_id")
    status = " ".join(blank(msg.get("status")).upper().split())
    if status == "ANSWERD":  # the doc's own spelling
        status = "ANSWERED"
    return CdrReport(
        call_id=call_id,
        time_start=blank(msg.get("time_start")),
        call_from=blank(msg.get("call_from")),
        call_to=blank(msg.get("call_to")),
        call_duration=_int(msg.get("call_duration")),
        talk_duration=_int(msg.get("talk_duration")),
        status=status,
        call_type=blank(msg.get("type")).lower(),
        recording=blank(msg.get("recording")),
        src_trunk_name=blank(msg.get("src_trunk_name")),
        dst_trunk_name=blank(msg.get("dst_trunk_name")),
        did_number=blank(msg.get("did_number")),
        agent_ring_time=_int(msg.get("agent_ring_time")),
    )


def parse_payload(event_type: int, msg: Mapping[str, Any]) -> Payload | None:
    """The typed payload, or ``None`` for event types this driver ignores."""
    if event_type in CALL_EVENT_TYPES:
        return parse_call_report(event_type, msg)
    if event_type == EventType.NEW_CDR:
        return parse_cdr(msg)
    if event_type in (
        EventType.REGISTRATION_STATUS,
        EventType.EXTENSION_CALL_STATUS,
        EventType.PRESENCE_STATUS,
    ):
        extension = blank(msg.get("extension"))
        if not extension:
            raise InvalidEvent(f"event {event_type} without extension")
        return ExtensionStatusReport(
            type=event_type,
            extension=extension,
            status=blank(msg.get("status")),
            kind=blank(msg.get("kind")),
        )
    return None
