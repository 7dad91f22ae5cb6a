"""Turn one PBX's ordered AMI event stream into normalized call events.

One call = one conversation (``reference/asterisk_ami.md`` §2.12): channels are grouped by
``Linkedid``; when a bridge joins channels of two calls, or a channel adopts another linkedid,
the younger call's channels move into the older one. The outcome is derived from the event
sequence (DialEnd statuses, bridges, queue events), never from hangup causes, which lie
(queue losers end with 26 "Answered elsewhere", 603 Decline maps to congestion).

Times: the event's ``Timestamp`` header when the PBX sends one (``timestampevents = yes``),
else the receive time the caller passes in, else (replaying a capture) a clock kept from the
stream itself: Uniqueid epochs, CEL ``EventTime`` and Cdr times. Because Hangup events can
precede the CEL records that date them, a call is closed on CEL ``LINKEDID_END`` whenever the
stream carries CEL, and right after its last Hangup otherwise.

Transfers: ``BlindTransfer`` / ``AttendedTransfer`` events, and calls moved by an AMI
``Redirect`` (a receptionist's console, a CRM's transfer button), for which Asterisk sends no
transfer event: the redirected channel leaves its bridge while the extension it talked to is
still there (that extension is then hung up as the bridge dissolves), runs the dialplan again,
dials, and enters a new bridge with another extension. That is recorded as a blind transfer
from the first extension to the second, dated when the channel left.

The tracker is synchronous and does no I/O: ``feed`` returns the events to publish.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
    MemberState,
    Presence,
    PresenceChanged,
    QueueAgentMissed,
    QueueAgentRang,
    QueueCompleted,
    QueueConnected,
    QueueJoined,
    QueueLeft,
    QueueMemberChanged,
    QueueOutcome,
    RecordingAvailable,
    TransferKind,
)
from callbridge.domain.numbers import parse_key
from callbridge.pbx.asterisk.codec import Message, unescape

log = logging.getLogger(__name__)

_EPOCH_UNIQUEID = re.compile(r"^(?:.*-)?(\d{9,11})\.\d+$")
_CHANNEL_SUFFIX = re.compile(r"-[0-9a-fA-F]{4,}$")
_UNKNOWN = {"", "<unknown>", "unknown", "anonymous"}
_DIRECTIONS = {
    "inbound": Direction.INBOUND,
    "in": Direction.INBOUND,
    "incoming": Direction.INBOUND,
    "outbound": Direction.OUTBOUND,
    "out": Direction.OUTBOUND,
    "outgoing": Direction.OUTBOUND,
    "internal": Direction.INTERNAL,
}
_DEVICE_PRESENCE = {
    "NOT_INUSE": Presence.AVAILABLE,
    "INUSE": Presence.ON_CALL,
    "BUSY": Presence.ON_CALL,
    "RINGING": Presence.RINGING,
    "RINGINUSE": Presence.ON_CALL,
    "ONHOLD": Presence.ON_HOLD,
    "UNAVAILABLE": Presence.OFFLINE,
    "INVALID": Presence.OFFLINE,
    "UNKNOWN": Presence.UNKNOWN,
}
_EXTENSION_PRESENCE = {
    "0": Presence.AVAILABLE,
    "1": Presence.ON_CALL,
    "2": Presence.ON_CALL,
    "4": Presence.OFFLINE,
    "8": Presence.RINGING,
    "9": Presence.ON_CALL,
    "16": Presence.ON_HOLD,
    "17": Presence.ON_HOLD,
}
# QueueMember* ``Status``: the numeric device state (AST_DEVICE_*).
_MEMBER_STATE = {
    "1": MemberState.AVAILABLE,
    "2": MemberState.ON_CALL,
    "3": MemberState.ON_CALL,
    "4": MemberState.OFFLINE,
    "5": MemberState.OFFLINE,
    "6": MemberState.RINGING,
    "7": MemberState.ON_CALL,
    "8": MemberState.ON_CALL,
}
# QUEUESTATUS, set on the caller's channel when Queue() returns without an answer.
_QUEUE_STATUS = {
    "TIMEOUT": QueueOutcome.TIMEOUT,
    "FULL": QueueOutcome.FULL,
    "JOINEMPTY": QueueOutcome.JOIN_EMPTY,
    "JOINUNAVAIL": QueueOutcome.JOIN_EMPTY,
    "LEAVEEMPTY": QueueOutcome.LEAVE_EMPTY,
    "LEAVEUNAVAIL": QueueOutcome.LEAVE_EMPTY,
    "CONTINUE": QueueOutcome.LEFT,
}
_PHONE_TECHS = {"PJSIP", "SIP", "IAX2", "DAHDI", "WEBRTC", "MOTIF", "UNISTIM", "SKINNY"}


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    pbx: str
    # fnmatch patterns for trunk endpoints, tried on "trunk" and on "PJSIP/trunk".
    trunk_patterns: tuple[str, ...] = ("trunk*",)
    default_region: str = "US"
    # Dialplan variable that states the direction (e.g. Set(__CALLBRIDGE_DIRECTION=inbound)).
    direction_variable: str = "CALLBRIDGE_DIRECTION"
    # Calls that see no event for this long are closed (a lost Hangup must not leak memory).
    stale_after: timedelta = timedelta(hours=4)
    # After the last Hangup, how long to wait for CEL LINKEDID_END before closing anyway.
    linger: timedelta = timedelta(seconds=5)
    # Time zone of CEL/Cdr text times (used only when events carry no Timestamp).
    pbx_timezone: str = "UTC"
    keep_records: int = 1000


@dataclass(slots=True)
class Channel:
    name: str
    uniqueid: str
    linkedid: str
    tech: str
    resource: str
    is_trunk: bool
    is_local: bool
    caller_num: str = ""
    caller_name: str = ""
    context: str = ""
    exten: str = ""
    up: bool = False
    hungup: bool = False
    bridge: str = ""
    call: Call | None = None
    leaving: bool = False  # its hangup was requested (by its own side or by Asterisk)
    # Left a bridge while up and while the extension it talked to stayed: (that extension, when).
    moved_from: tuple[str, datetime] | None = None
    redialed: bool = False  # dialled again since (it went back to the dialplan)
    explained: bool = False  # a transfer event covers its next move

    @property
    def is_phone(self) -> bool:
        return not self.is_trunk and not self.is_local

    @property
    def local_base(self) -> str:
        return self.name.rsplit(";", 1)[0] if self.is_local else ""


@dataclass(slots=True)
class CallRecord:
    """What the tracker concluded about one finished call (used by tests and diagnostics)."""

    call_id: str
    direction: Direction
    from_number: str
    to_number: str
    from_name: str
    started_at: datetime
    ringing_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime
    disposition: Disposition
    hangup_side: HangupSide
    answered_by: str
    recordings: list[str] = field(default_factory=list)
    transfers: list[tuple[TransferKind, str, str]] = field(default_factory=list)

    @property
    def ring_seconds(self) -> float:
        start = self.ringing_at or self.started_at
        end = self.answered_at or self.ended_at
        return max(0.0, (end - start).total_seconds())

    @property
    def talk_seconds(self) -> float:
        if self.answered_at is None:
            return 0.0
        return max(0.0, (self.ended_at - self.answered_at).total_seconds())


@dataclass(slots=True)
class OriginateHint:
    extension: str
    number: str


@dataclass(slots=True)
class Call:
    call_id: str
    started_at: datetime
    last_at: datetime
    linkedids: set[str] = field(default_factory=set)
    channels: dict[str, Channel] = field(default_factory=dict)
    first: Channel | None = None
    originated: bool = False
    hint: OriginateHint | None = None
    direction_var: Direction | None = None
    started: bool = False
    direction: Direction = Direction.INTERNAL
    from_number: str = ""
    from_name: str = ""
    to_number: str = ""
    dialed_trunk: bool = False
    dialed_number: str = ""
    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    answered_by: str = ""
    statuses: set[str] = field(default_factory=set)
    abandoned: bool = False
    voicemail: bool = False
    hangup_side: HangupSide | None = None
    recordings: list[str] = field(default_factory=list)
    transfers: list[tuple[TransferKind, str, str]] = field(default_factory=list)
    all_hungup_at: datetime | None = None
    system_hangup: bool = False
    ended_linkedids: set[str] = field(default_factory=set)


@dataclass(slots=True)
class QueueStay:
    """A caller channel's stay in one queue, as far as the tracker needs it."""

    queue: str
    joined_at: datetime
    left_at: datetime | None = None  # QueueCallerLeave came; the reason (QUEUESTATUS) not yet
    done: bool = False  # answered, abandoned, or its QueueLeft was emitted


class CallTracker:
    """Stateful AMI → normalized-event translator for one PBX (see the module docstring)."""

    def __init__(self, config: TrackerConfig) -> None:
        self.config = config
        self._tz = ZoneInfo(config.pbx_timezone)
        self._channels: dict[str, Channel] = {}
        self._calls: dict[str, Call] = {}  # by linkedid (every linkedid of a merged call)
        self._hints: dict[str, OriginateHint] = {}
        self._presence: dict[str, Presence] = {}
        self._clock: datetime | None = None
        self._text_time_cache: tuple[str, datetime] | None = None
        self._cel_seen = False
        self._inband_now = False
        self._bridges: dict[str, set[str]] = {}
        self.records: deque[CallRecord] = deque(maxlen=config.keep_records)
        self.events_seen = 0
        # Queue events about a caller channel the tracker had never seen (joined before a
        # reconnect, …): they are still turned into queue events, and counted here.
        self.queue_orphans = 0
        self.queues: set[str] = set()
        self._stays: dict[str, QueueStay] = {}  # caller Uniqueid → current stay
        self._queue_app: dict[str, str] = {}  # Uniqueid → queue named by its last Queue() app
        self._members: dict[tuple[str, str], tuple[MemberState, bool, str]] = {}
        self._interfaces: dict[tuple[str, str], str] = {}  # (queue, extension) → Interface
        dv = config.direction_variable
        self._direction_names = {dv, f"_{dv}", f"__{dv}"} if dv else set()
        self._handlers: dict[str, Callable[[Message, datetime, list[Event]], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "HangupRequest": self._on_hangup_request,
            "SoftHangupRequest": self._on_soft_hangup_request,
            "Hangup": self._on_hangup,
            "VarSet": self._on_varset,
            "Newexten": self._on_newexten,
            "UserEvent": self._on_user_event,
            "CEL": self._on_cel,
            "Cdr": self._on_cdr,
            "QueueCallerAbandon": self._on_queue_abandon,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_queue_leave,
            "AgentCalled": self._on_agent_called,
            "AgentRingNoAnswer": self._on_agent_ring_no_answer,
            "AgentConnect": self._on_agent_connect,
            "AgentComplete": self._on_agent_complete,
            "QueueMemberStatus": self._on_queue_member,
            "QueueMemberPause": self._on_queue_member,
            "QueueMemberAdded": self._on_queue_member,
            "QueueMemberRemoved": self._on_queue_member,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "DeviceStateChange": self._on_device_state,
            "ExtensionStatus": self._on_extension_status,
        }
        self._trunk_cache: dict[str, bool] = {}

    # -- public API --------------------------------------------------------------------------

    @property
    def event_names(self) -> frozenset[str]:
        """The AMI events this tracker reads; every other event can be dropped unread."""
        return frozenset(self._handlers)

    @property
    def live_calls(self) -> int:
        return len({id(c) for c in self._calls.values()})

    def _find(self, call_id: str) -> Call | None:
        call = self._calls.get(call_id)
        if call is not None:
            return call
        return next((c for c in self._unique_calls() if c.call_id == call_id), None)

    def channels_of(self, call_id: str) -> list[str]:
        """Live non-Local channel names of a call, its first channel first."""
        call = self._find(call_id)
        if call is None:
            return []
        live = [ch for ch in call.channels.values() if not ch.hungup and not ch.is_local]
        live.sort(key=lambda ch: ch is not call.first)
        return [ch.name for ch in live]

    def external_channel_of(self, call_id: str) -> str | None:
        """The channel to move in a blind transfer: the outside party, else the caller."""
        call = self._find(call_id)
        if call is None:
            return None
        live = [ch for ch in call.channels.values() if not ch.hungup and not ch.is_local]
        trunk = next((ch for ch in live if ch.is_trunk), None)
        if trunk is not None:
            return trunk.name
        if call.first is not None and not call.first.hungup:
            return call.first.name
        return live[0].name if live else None

    def member_interface(self, queue: str, extension: str) -> str:
        """The interface queue ``queue`` knows member ``extension`` by (``""`` if never seen)."""
        return self._interfaces.get((queue, extension), "")

    def spy_target(self, call_id: str) -> str | None:
        """The channel a supervisor listens to: the phone of whoever answered, else any phone
        in the call, else its first live channel."""
        call = self._find(call_id)
        if call is None:
            return None
        live = [ch for ch in call.channels.values() if not ch.hungup and not ch.is_local]
        phones = [ch for ch in live if ch.is_phone and ch is not call.first]
        agent = next((ch for ch in phones if self._extension(ch) == call.answered_by), None)
        chosen = agent or (phones[0] if phones else None) or (live[0] if live else None)
        return chosen.name if chosen is not None else None

    def expect_originate(self, channel_id: str, extension: str, number: str) -> None:
        """Tell the tracker that a channel with this Uniqueid is our click-to-call."""
        self._hints[channel_id] = OriginateHint(extension, self._number(number))

    def feed(self, msg: Message, received_at: datetime | None = None) -> list[Event]:
        """Process one AMI message; returns the normalized events it completes, in order."""
        name = msg.get("Event")
        if not name:
            return []
        handler = self._handlers.get(name)
        if handler is None:
            return []
        self.events_seen += 1
        out: list[Event] = []
        self._inband_now = received_at is None and not msg.get("Timestamp")
        at = self._time(msg, received_at)
        try:
            handler(msg, at, out)
        except Exception:
            # A surprising event must not stop the link: log with ids and go on.
            log.exception(
                "pbx %s: could not process %s for channel %s",
                self.config.pbx,
                name,
                msg.get("Uniqueid") or msg.get("DestUniqueid"),
            )
        return out

    def feed_all(self, messages: Iterable[Message]) -> list[Event]:
        out: list[Event] = []
        for msg in messages:
            out += self.feed(msg)
        return out

    def sweep(self, now: datetime) -> list[Event]:
        """Close calls whose end was never seen (stale) or whose LINKEDID_END did not come."""
        out: list[Event] = []
        for call in self._unique_calls():
            if call.all_hungup_at is not None and now - call.all_hungup_at >= self.config.linger:
                self._close(call, call.all_hungup_at, out)
            elif now - call.last_at >= self.config.stale_after:
                log.warning("pbx %s: closing stale call %s", self.config.pbx, call.call_id)
                self._close(call, call.last_at, out, side=HangupSide.UNKNOWN)
        return out

    def reconcile(self, snapshot: list[Message], now: datetime) -> list[Event]:
        """After a reconnect: ``snapshot`` is the CoreShowChannel list. Calls whose channels
        are all gone ended during the gap; channels we do not know are rebuilt."""
        out: list[Event] = []
        self._inband_now = False
        live = {m.get("Uniqueid"): m for m in snapshot if m.get("Uniqueid")}
        for uid, channel in list(self._channels.items()):
            if uid not in live and not channel.hungup:
                channel.hungup = True
                channel.up = False
        for call in self._unique_calls():
            if all(ch.hungup for ch in call.channels.values()):
                self._close(call, now, out, side=HangupSide.UNKNOWN)
        for uid, msg in live.items():
            if uid in self._channels:
                continue
            started = now - _parse_duration(msg.get("Duration"))
            rebuilt = self._channel(msg, started, out, create=True)
            if rebuilt is None or rebuilt.call is None:
                continue
            rebuilt.call.started_at = min(rebuilt.call.started_at, started)
            rebuilt.up = msg.get("ChannelStateDesc") == "Up"
            bridge = msg.get("BridgeId")
            if bridge:
                rebuilt.bridge = bridge
                self._bridges.setdefault(bridge, set()).add(uid)
        # Second pass: a bridged pair of live channels is a conversation in progress.
        by_bridge: dict[str, list[Channel]] = {}
        for ch in self._channels.values():
            if ch.bridge and not ch.hungup:
                by_bridge.setdefault(ch.bridge, []).append(ch)
        for members in by_bridge.values():
            if len(members) >= 2:
                self._join(members, now, out)
                talking = members[0].call
                if talking is not None and talking.answered_at is None:
                    self._ensure_started(talking, out)
                    who = self._human_other_than_caller(talking, members)
                    self._mark_answered(talking, who, now, out)
        for call in self._unique_calls():
            self._ensure_started(call, out)
        return out

    # -- time ----------------------------------------------------------------------------------

    def _time(self, msg: Message, received_at: datetime | None) -> datetime:
        stamp = msg.get("Timestamp")
        if stamp:
            try:
                at = datetime.fromtimestamp(float(stamp), UTC)
            except (ValueError, OverflowError):
                at = None
            if at is not None:
                self._clock = at
                return at
        if received_at is not None:
            self._clock = received_at
            return received_at
        return self._clock or datetime.now(UTC)

    def _advance_clock(self, at: datetime | None) -> None:
        if at is not None and (self._clock is None or at > self._clock):
            self._clock = at

    def _text_time(self, text: str) -> datetime | None:
        """Parse CEL/Cdr ``%Y-%m-%d %H:%M:%S`` in the PBX time zone (cached: 1 s resolution)."""
        if not text:
            return None
        cached = self._text_time_cache
        if cached is not None and cached[0] == text:
            return cached[1]
        try:
            at = datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=self._tz).astimezone(UTC)
        except ValueError:
            return None
        self._text_time_cache = (text, at)
        return at

    def _inband(self, msg: Message) -> bool:
        """Whether the current event has no better clock than the stream's own content."""
        return self._inband_now

    # -- channels and calls --------------------------------------------------------------------

    def _is_trunk(self, tech: str, resource: str) -> bool:
        key = f"{tech}/{resource}"
        cached = self._trunk_cache.get(key)
        if cached is None:
            cached = any(
                fnmatch.fnmatchcase(resource, p) or fnmatch.fnmatchcase(key, p)
                for p in self.config.trunk_patterns
            )
            if len(self._trunk_cache) < 10000:
                self._trunk_cache[key] = cached
        return cached

    def _new_channel(self, name: str, uniqueid: str, linkedid: str) -> Channel:
        tech, _, rest = name.partition("/")
        is_local = tech == "Local"
        if is_local:
            resource = rest.rsplit(";", 1)[0]
            resource = _CHANNEL_SUFFIX.sub("", resource)
        else:
            resource = _CHANNEL_SUFFIX.sub("", rest)
        return Channel(
            name=name,
            uniqueid=uniqueid,
            linkedid=linkedid or uniqueid,
            tech=tech,
            resource=resource,
            is_trunk=not is_local and self._is_trunk(tech, resource),
            is_local=is_local,
        )

    def _channel(
        self, msg: Message, at: datetime, out: list[Event], prefix: str = "", create: bool = True
    ) -> Channel | None:
        uid = msg.get(prefix + "Uniqueid")
        if not uid:
            return None
        channel = self._channels.get(uid)
        linkedid = msg.get(prefix + "Linkedid") or uid
        if channel is None:
            if not create:
                return None
            name = msg.get(prefix + "Channel")
            if not name:
                return None
            channel = self._new_channel(name, uid, linkedid)
            self._channels[uid] = channel
            if self._inband(msg):
                self._advance_clock(_uniqueid_time(uid))
                at = self._clock or at
            call = self._calls.get(linkedid)
            if call is None:
                call = Call(call_id=linkedid, started_at=at, last_at=at, linkedids={linkedid})
                self._calls[linkedid] = call
            hint = self._hints.pop(uid, None)
            if hint is not None:
                call.hint = hint
                call.originated = True
            self._attach(channel, call)
        elif linkedid != channel.linkedid and channel.call is not None:
            # Bridging makes every member adopt the oldest linkedid: follow it (merge).
            channel.linkedid = linkedid
            target = self._calls.get(linkedid)
            if target is None:
                self._calls[linkedid] = channel.call
                channel.call.linkedids.add(linkedid)
            elif target is not channel.call:
                self._merge(target, channel.call, out)
        num = msg.get(prefix + "CallerIDNum")
        if num:
            channel.caller_num = num
            channel.caller_name = msg.get(prefix + "CallerIDName")
        ctx = msg.get(prefix + "Context")
        if ctx:
            channel.context = ctx
            channel.exten = msg.get(prefix + "Exten")
        if channel.call is not None:
            channel.call.last_at = at
        return channel

    def _attach(self, channel: Channel, call: Call) -> None:
        channel.call = call
        call.channels[channel.uniqueid] = channel
        if call.first is None:
            call.first = channel
        call.all_hungup_at = None

    def _older(self, a: Call, b: Call) -> tuple[Call, Call]:
        return (a, b) if (a.started_at, a.call_id) <= (b.started_at, b.call_id) else (b, a)

    def _merge(self, a: Call, b: Call, out: list[Event]) -> None:
        """Fold the younger call into the older one (oldest linkedid wins, as in Asterisk).

        The younger call's live channels move over. If the younger call was already announced
        (a transfer's consultation call), it ends now as a call of its own; otherwise it simply
        disappears into the older one.
        """
        keep, gone = self._older(a, b)
        if gone.started and not keep.started:
            # The older half was never announced: the conversation keeps the announced identity.
            keep.started = True
            keep.call_id = gone.call_id
            keep.direction = gone.direction
            keep.from_number, keep.to_number, keep.from_name = (
                gone.from_number,
                gone.to_number,
                gone.from_name,
            )
            gone.started = False
        if not gone.started:
            keep.answered_at = keep.answered_at or gone.answered_at
            keep.answered_by = keep.answered_by or gone.answered_by
            keep.ringing_at = keep.ringing_at or gone.ringing_at
            keep.statuses |= gone.statuses
            keep.recordings += [r for r in gone.recordings if r not in keep.recordings]
            keep.transfers += gone.transfers
            keep.hangup_side = keep.hangup_side or gone.hangup_side
            keep.dialed_trunk = keep.dialed_trunk or gone.dialed_trunk
        for uid, ch in list(gone.channels.items()):
            if ch.hungup and gone.started:
                continue
            del gone.channels[uid]
            self._attach(ch, keep)
        for lid in gone.linkedids:
            if self._calls.get(lid) is gone:
                self._calls[lid] = keep
            keep.linkedids.add(lid)
            if lid in gone.ended_linkedids:
                keep.ended_linkedids.add(lid)
        if gone.started:
            self._close(gone, keep.last_at, out)
        else:
            self._forget(gone)

    def _join(self, members: list[Channel], at: datetime, out: list[Event]) -> None:
        calls = []
        for ch in members:
            if ch.call is not None and ch.call not in calls:
                calls.append(ch.call)
        while len(calls) > 1:
            a, b = calls.pop(), calls.pop()
            keep, gone = self._older(a, b)
            self._merge(keep, gone, out)
            calls.append(keep)

    def _unique_calls(self) -> list[Call]:
        seen: dict[int, Call] = {}
        for call in self._calls.values():
            seen.setdefault(id(call), call)
        return list(seen.values())

    # -- numbers -------------------------------------------------------------------------------

    def _number(self, raw: str) -> str:
        raw = raw.strip()
        if raw.lower() in _UNKNOWN:
            return ""
        key = parse_key(raw, self.config.default_region)[1]
        if key:
            return key
        cleaned = "".join(c for c in raw if c.isdigit() or c == "+")
        return cleaned or raw

    def _extension(self, channel: Channel) -> str:
        """An internal party's extension: its endpoint name when numeric, else its caller id."""
        res = channel.resource
        if channel.is_local:
            res = res.split("@", 1)[0]
        if res.isdigit():
            return res
        num = channel.caller_num
        return num if num.lower() not in _UNKNOWN else res

    # -- decisions -----------------------------------------------------------------------------

    def _ensure_started(self, call: Call, out: list[Event]) -> None:
        if call.started or call.first is None:
            return
        first = call.first
        call.started = True
        if call.direction_var is not None:
            direction = call.direction_var
        elif call.hint is not None:
            direction = Direction.OUTBOUND
        elif first.is_trunk:
            direction = Direction.INBOUND
        elif call.dialed_trunk:
            direction = Direction.OUTBOUND
        else:
            direction = Direction.INTERNAL
        call.direction = direction
        if call.hint is not None:
            call.from_number = call.hint.extension
            call.to_number = call.hint.number
        elif first.is_trunk:
            call.from_number = self._number(first.caller_num)
            call.from_name = _name(first.caller_name)
            call.to_number = self._number(first.exten) if first.exten not in ("", "s") else ""
        else:
            call.from_number = self._extension(first)
            call.from_name = _name(first.caller_name)
            target = call.dialed_number or first.exten
            call.to_number = self._number(target) if target not in ("", "s") else ""
        placed_by = ""
        if direction is not Direction.INBOUND and (call.hint is not None or not first.is_trunk):
            placed_by = call.from_number if call.from_number.isdigit() else ""
        out.append(
            CallStarted(
                pbx=self.config.pbx,
                at=call.started_at,
                call_id=call.call_id,
                direction=direction,
                from_number=call.from_number,
                to_number=call.to_number,
                from_name=call.from_name,
                placed_by=placed_by,
            )
        )

    def _mark_answered(self, call: Call, who: str, at: datetime, out: list[Event]) -> None:
        if call.answered_at is not None:
            return
        self._ensure_started(call, out)
        if call.direction is Direction.OUTBOUND:
            who = ""  # the outside party answered; the extension that placed it is placed_by
        call.answered_at = at
        call.answered_by = who
        out.append(CallAnswered(pbx=self.config.pbx, at=at, call_id=call.call_id, extension=who))

    def _human_other_than_caller(self, call: Call, members: list[Channel]) -> str:
        for ch in members:
            if ch.is_phone and ch is not call.first:
                return self._extension(ch)
        for ch in members:
            if ch.is_phone:
                return self._extension(ch)
        return ""

    def _disposition(self, call: Call) -> Disposition:
        if call.answered_at is not None:
            return Disposition.ANSWERED
        if call.abandoned:
            return Disposition.ABANDONED
        if call.voicemail:
            return Disposition.VOICEMAIL
        statuses = call.statuses
        if statuses & {"NOANSWER", "CANCEL"}:
            return Disposition.MISSED
        if "BUSY" in statuses:
            return Disposition.BUSY
        if statuses & {"CHANUNAVAIL", "CONGESTION", "ABORT"}:
            return Disposition.FAILED
        return Disposition.MISSED if call.direction is Direction.INBOUND else Disposition.FAILED

    def _close(self, call: Call, at: datetime, out: list[Event], side: HangupSide | None = None) -> None:
        if call.first is None:
            self._forget(call)
            return
        self._ensure_started(call, out)
        for recording in call.recordings:
            out.append(
                RecordingAvailable(pbx=self.config.pbx, at=at, call_id=call.call_id, recording=recording)
            )
        disposition = self._disposition(call)
        hangup_side = (
            call.hangup_side or side or (HangupSide.SYSTEM if call.system_hangup else HangupSide.UNKNOWN)
        )
        answered_by = call.answered_by if disposition is Disposition.ANSWERED else ""
        out.append(
            CallEnded(
                pbx=self.config.pbx,
                at=at,
                call_id=call.call_id,
                disposition=disposition,
                hangup_side=hangup_side,
                answered_by=answered_by,
            )
        )
        self.records.append(
            CallRecord(
                call_id=call.call_id,
                direction=call.direction,
                from_number=call.from_number,
                to_number=call.to_number,
                from_name=call.from_name,
                started_at=call.started_at,
                ringing_at=call.ringing_at,
                answered_at=call.answered_at,
                ended_at=at,
                disposition=disposition,
                hangup_side=hangup_side,
                answered_by=answered_by,
                recordings=list(call.recordings),
                transfers=list(call.transfers),
            )
        )
        self._forget(call)

    def _forget(self, call: Call) -> None:
        for uid in list(call.channels):
            ch = self._channels.get(uid)
            if ch is not None and ch.call is call:
                del self._channels[uid]
            # A stay whose Hangup never came (a call closed as stale or after a reconnect).
            self._stays.pop(uid, None)
            self._queue_app.pop(uid, None)
        for key in [k for k, v in self._calls.items() if v is call]:
            del self._calls[key]

    def _maybe_finish(self, call: Call, at: datetime, out: list[Event]) -> None:
        if any(not ch.hungup for ch in call.channels.values()):
            return
        call.all_hungup_at = at
        if self._cel_seen and not call.linkedids <= call.ended_linkedids:
            return  # wait for CEL LINKEDID_END: it also dates the end when there is no Timestamp
        self._close(call, at, out)

    # -- handlers ------------------------------------------------------------------------------

    def _on_newchannel(self, msg: Message, at: datetime, out: list[Event]) -> None:
        self._channel(msg, at, out)

    def _on_newstate(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._channel(msg, at, out)
        if ch is None:
            return
        ch.up = msg.get("ChannelStateDesc") == "Up"

    def _on_dial_begin(self, msg: Message, at: datetime, out: list[Event]) -> None:
        caller = self._channel(msg, at, out)
        dest = self._channel(msg, at, out, prefix="Dest")
        if dest is None:
            return
        call = dest.call if caller is None else caller.call
        if call is None:
            return
        if dest.call is not call:
            # A dialed channel always belongs to the dialer's conversation.
            if dest.call is not None:
                dest.call.channels.pop(dest.uniqueid, None)
                if not dest.call.channels:
                    self._forget(dest.call)
            self._attach(dest, call)
        if caller is None:
            # Originate: the first leg rings the user's own phone; nothing to announce yet.
            call.originated = True
            return
        if caller.moved_from is not None:
            caller.redialed = True
        if dest.is_trunk:
            call.dialed_trunk = True
            if not call.dialed_number:
                call.dialed_number = _dialstring_number(msg.get("DialString")) or caller.exten
        elif dest.is_phone and not call.dialed_number and caller is call.first:
            call.dialed_number = caller.exten
        self._ensure_started(call, out)
        if dest.is_phone:
            if call.ringing_at is None:
                call.ringing_at = at
            out.append(
                CallRinging(pbx=self.config.pbx, at=at, call_id=call.call_id, extension=self._extension(dest))
            )

    def _on_dial_end(self, msg: Message, at: datetime, out: list[Event]) -> None:
        caller = self._channel(msg, at, out)
        dest = self._channel(msg, at, out, prefix="Dest")
        if dest is None or dest.call is None:
            return
        call = dest.call
        status = msg.get("DialStatus")
        if caller is None:
            if status != "ANSWER":
                call.statuses.add("CHANUNAVAIL" if status != "BUSY" else "BUSY")
            return
        if dest.is_local:
            return  # the Local ;2 half reports the real outcome
        if status == "ANSWER":
            if dest.is_trunk:
                self._mark_answered(call, self._extension(caller) if caller.is_phone else "", at, out)
            else:
                self._mark_answered(call, self._extension(dest), at, out)
        elif status:
            call.statuses.add(status.split(":", 1)[0])

    def _on_bridge_enter(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._channel(msg, at, out)
        if ch is None:
            return
        bridge = msg.get("BridgeUniqueid")
        self._leave_bridge(ch)
        ch.bridge = bridge
        uids = self._bridges.setdefault(bridge, set())
        uids.add(ch.uniqueid)
        if msg.get("BridgeType") == "holding" or msg.get("BridgeTechnology") == "holding_bridge":
            return
        members = [c for u in uids if (c := self._channels.get(u)) is not None and not c.hungup]
        if len(members) < 2:
            return
        self._join(members, at, out)
        call = ch.call
        if call is None:
            return
        # Local channel pairs bridge to each other; only a bridge with a real party is a talk.
        if any(not c.is_local for c in members) and call.answered_at is None:
            who = self._human_other_than_caller(call, members)
            if who or any(c.is_trunk for c in members):
                self._mark_answered(call, who, at, out)
        self._moved(call, members, out)

    def _on_bridge_leave(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._channel(msg, at, out, create=False)
        if ch is None:
            return
        holding = msg.get("BridgeType") == "holding" or msg.get("BridgeTechnology") == "holding_bridge"
        if not (holding or ch.leaving or ch.hungup or ch.explained) and ch.bridge:
            # Leaving first, alive, while the extension it talked to stays: a Redirect (or the
            # start of a blind transfer, whose event then explains it).
            stays = [
                c
                for u in self._bridges.get(ch.bridge, ())
                if u != ch.uniqueid
                and (c := self._channels.get(u)) is not None
                and c.is_phone
                and not (c.hungup or c.leaving)
            ]
            if stays:
                ch.moved_from = (self._extension(stays[0]), at)
                ch.redialed = False
        self._leave_bridge(ch)

    def _moved(self, call: Call, members: list[Channel], out: list[Event]) -> None:
        """A channel moved by a Redirect has entered a bridge with someone: a transfer."""
        for ch in members:
            moved = ch.moved_from
            if moved is not None and ch.redialed and not ch.explained:
                target = next((c for c in members if c is not ch and (c.is_phone or c.is_local)), None)
                to = self._extension(target) if target is not None else ""
                if to and to != moved[0]:
                    self._transferred(call, TransferKind.BLIND, moved[0], to, moved[1], out)
            ch.moved_from, ch.redialed, ch.explained = None, False, False

    def _leave_bridge(self, ch: Channel) -> None:
        if ch.bridge:
            uids = self._bridges.get(ch.bridge)
            if uids is not None:
                uids.discard(ch.uniqueid)
                if not uids:
                    del self._bridges[ch.bridge]
            ch.bridge = ""

    def _on_hangup_request(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._channel(msg, at, out, create=False)
        if ch is None or ch.call is None or ch.is_local:
            return
        call = ch.call
        ch.leaving = True
        if call.hangup_side is None:
            call.hangup_side = HangupSide.CALLER if ch is call.first else HangupSide.CALLEE

    def _on_soft_hangup_request(self, msg: Message, at: datetime, out: list[Event]) -> None:
        # Asterisk ended a leg itself (dial timeout, hangup action); counts only if no party did.
        ch = self._channel(msg, at, out, create=False)
        if ch is not None and ch.call is not None:
            ch.leaving = True
            ch.call.system_hangup = True

    def _on_hangup(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._channel(msg, at, out, create=False)
        if ch is None or ch.call is None:
            return
        ch.hungup = True
        ch.up = False
        self._leave_bridge(ch)
        call = ch.call
        self._queue_app.pop(ch.uniqueid, None)
        stay = self._stays.pop(ch.uniqueid, None)
        if stay is not None and not stay.done:
            # Left the queue and no QUEUESTATUS told why (or never left it: the link missed it).
            self._queue_left(ch, stay, QueueOutcome.LEFT, 0, stay.left_at or at, out)
        self._maybe_finish(call, at, out)

    def _on_varset(self, msg: Message, at: datetime, out: list[Event]) -> None:
        var = msg.get("Variable")
        if var in self._direction_names:
            ch = self._channel(msg, at, out)
            if ch is not None and ch.call is not None:
                self._set_direction(ch.call, msg.unescaped("Value"))
        elif var == "QUEUESTATUS":
            self._on_queue_status_var(msg, at, out)
        elif var == "MIXMONITOR_FILENAME":
            ch = self._channel(msg, at, out)
            value = msg.unescaped("Value")
            if ch is not None and ch.call is not None and value and value not in ch.call.recordings:
                ch.call.recordings.append(value)

    def _set_direction(self, call: Call, value: str) -> None:
        direction = _DIRECTIONS.get(value.strip().lower())
        if direction is not None and call.direction_var is None:
            call.direction_var = direction

    def _on_newexten(self, msg: Message, at: datetime, out: list[Event]) -> None:
        if msg.get("Application").lower() == "queue":
            uid = msg.get("Uniqueid")
            name = msg.unescaped("AppData").split(",", 1)[0].strip()
            if uid and name:
                self._queue_app[uid] = name
        if msg.get("Application").lower() == "voicemail":
            ch = self._channel(msg, at, out, create=False)
            if ch is not None and ch.call is not None:
                ch.call.voicemail = True

    def _on_user_event(self, msg: Message, at: datetime, out: list[Event]) -> None:
        # Dialplan: UserEvent(CallbridgeCall,Direction: inbound,Linkedid: ${CHANNEL(linkedid)}) and
        # UserEvent(CallbridgeRecording,File: ${MIXMONITOR_FILENAME},Linkedid: …).
        call = self._calls.get(msg.get("Linkedid"))
        if call is None:
            ch = self._channel(msg, at, out, create=False)
            call = ch.call if ch is not None else None
        if call is None:
            return
        direction = msg.get("Direction") or msg.get(self.config.direction_variable)
        if direction:
            self._set_direction(call, direction)
        recording = msg.get("File")
        if recording and recording not in call.recordings:
            call.recordings.append(recording)

    def _on_cel(self, msg: Message, at: datetime, out: list[Event]) -> None:
        self._cel_seen = True
        if self._inband(msg):
            self._advance_clock(self._text_time(msg.get("EventTime")))
            at = self._clock or at
        if msg.get("EventName") != "LINKEDID_END":
            return
        lid = msg.get("LinkedID")
        call = self._calls.get(lid)
        if call is None:
            return
        call.ended_linkedids.add(lid)
        if call.all_hungup_at is not None and call.linkedids <= call.ended_linkedids:
            self._close(call, max(at, call.all_hungup_at), out)

    def _on_cdr(self, msg: Message, at: datetime, out: list[Event]) -> None:
        if self._inband(msg):
            self._advance_clock(self._text_time(msg.get("EndTime")))

    # -- queues ----------------------------------------------------------------------------------

    def _queue_channel(self, msg: Message, at: datetime, out: list[Event]) -> Channel | None:
        """The caller channel a queue event is about; one the tracker never saw is created from
        the event's own snapshot (and counted) so the event still reaches the call log."""
        known = msg.get("Uniqueid") in self._channels
        ch = self._channel(msg, at, out)
        if ch is None or ch.call is None:
            return None
        if not known:
            self.queue_orphans += 1
            log.info(
                "pbx %s: %s for channel %s the tracker had not seen; counted",
                self.config.pbx,
                msg.get("Event"),
                msg.get("Uniqueid"),
            )
        self._ensure_started(ch.call, out)
        queue = msg.get("Queue")
        if queue:
            self.queues.add(queue)
        return ch

    def _stay(self, ch: Channel, queue: str, at: datetime, wait: int = 0) -> QueueStay:
        stay = self._stays.get(ch.uniqueid)
        if stay is None or stay.queue != queue:
            stay = self._stays[ch.uniqueid] = QueueStay(queue, at - timedelta(seconds=wait))
        return stay

    def _queue_left(
        self, ch: Channel, stay: QueueStay, outcome: QueueOutcome, wait: int, at: datetime, out: list[Event]
    ) -> None:
        stay.done = True
        assert ch.call is not None
        if not wait:
            wait = max(0, round(((stay.left_at or at) - stay.joined_at).total_seconds()))
        out.append(
            QueueLeft(
                pbx=self.config.pbx,
                at=at,
                call_id=ch.call.call_id,
                queue=stay.queue,
                outcome=outcome,
                wait_seconds=wait,
            )
        )

    def _on_queue_join(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._queue_channel(msg, at, out)
        queue = msg.get("Queue")
        if ch is None or ch.call is None or not queue:
            return
        self._stays[ch.uniqueid] = QueueStay(queue, at)
        out.append(
            QueueJoined(
                pbx=self.config.pbx,
                at=at,
                call_id=ch.call.call_id,
                queue=queue,
                position=_int(msg.get("Position")),
            )
        )

    def _on_queue_leave(self, msg: Message, at: datetime, out: list[Event]) -> None:
        # Sent on every way out; only the reason-less ones (timeout, empty, a key) wait here
        # for the QUEUESTATUS that Queue() sets as it returns.
        stay = self._stays.get(msg.get("Uniqueid"))
        if stay is not None and stay.queue == msg.get("Queue") and not stay.done:
            stay.left_at = at

    def _on_queue_status_var(self, msg: Message, at: datetime, out: list[Event]) -> None:
        outcome = _QUEUE_STATUS.get(msg.get("Value").strip().upper())
        uid = msg.get("Uniqueid")
        if outcome is None or not uid:
            return
        ch = self._channel(msg, at, out)
        if ch is None or ch.call is None:
            return
        stay = self._stays.get(uid)
        if stay is not None and not stay.done:
            self._queue_left(ch, stay, outcome, 0, stay.left_at or at, out)
            return
        queue = self._queue_app.get(uid, "")
        if queue and (stay is None or stay.done) and outcome in (QueueOutcome.FULL, QueueOutcome.JOIN_EMPTY):
            # Refused at the door: no QueueCallerJoin was ever sent.
            self._ensure_started(ch.call, out)
            self.queues.add(queue)
            self._queue_left(ch, QueueStay(queue, at), outcome, 0, at, out)

    def _on_queue_abandon(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._queue_channel(msg, at, out)
        if ch is None or ch.call is None:
            return
        ch.call.abandoned = True
        ch.call.hangup_side = ch.call.hangup_side or HangupSide.CALLER
        queue = msg.get("Queue")
        if not queue:
            return
        wait = _int(msg.get("HoldTime"))
        stay = self._stay(ch, queue, at, wait)
        stay.done = True
        out.append(
            QueueLeft(
                pbx=self.config.pbx,
                at=at,
                call_id=ch.call.call_id,
                queue=queue,
                outcome=QueueOutcome.ABANDONED,
                wait_seconds=wait,
                position=_int(msg.get("Position")),
            )
        )

    def _on_agent_called(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._queue_channel(msg, at, out)
        queue = msg.get("Queue")
        if ch is None or ch.call is None or not queue:
            return
        self._stay(ch, queue, at)
        out.append(
            QueueAgentRang(
                pbx=self.config.pbx,
                at=at,
                call_id=ch.call.call_id,
                queue=queue,
                extension=_interface_extension(msg),
            )
        )

    def _on_agent_ring_no_answer(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._queue_channel(msg, at, out)
        queue = msg.get("Queue")
        if ch is None or ch.call is None or not queue:
            return
        out.append(
            QueueAgentMissed(
                pbx=self.config.pbx,
                at=at,
                call_id=ch.call.call_id,
                queue=queue,
                extension=_interface_extension(msg),
                ring_ms=_int(msg.get("RingTime")),
            )
        )

    def _on_agent_connect(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._queue_channel(msg, at, out)
        if ch is None or ch.call is None:
            return
        extension = _interface_extension(msg)
        self._mark_answered(ch.call, extension, at, out)
        queue = msg.get("Queue")
        if not queue:
            return
        wait = _int(msg.get("HoldTime"))
        self._stay(ch, queue, at, wait).done = True
        out.append(
            QueueConnected(
                pbx=self.config.pbx,
                at=at,
                call_id=ch.call.call_id,
                queue=queue,
                extension=extension,
                wait_seconds=wait,
                ring_seconds=_int(msg.get("RingTime")),
            )
        )

    def _on_agent_complete(self, msg: Message, at: datetime, out: list[Event]) -> None:
        ch = self._queue_channel(msg, at, out)
        if ch is None or ch.call is None:
            return
        reason = msg.get("Reason")
        if reason == "caller":
            ch.call.hangup_side = HangupSide.CALLER
        elif reason == "agent":
            ch.call.hangup_side = HangupSide.CALLEE
        queue = msg.get("Queue")
        if not queue:
            return
        out.append(
            QueueCompleted(
                pbx=self.config.pbx,
                at=at,
                call_id=ch.call.call_id,
                queue=queue,
                extension=_interface_extension(msg),
                wait_seconds=_int(msg.get("HoldTime")),
                talk_seconds=_int(msg.get("TalkTime")),
                reason=reason,
            )
        )

    def _on_queue_member(self, msg: Message, at: datetime, out: list[Event]) -> None:
        self._member(msg, at, out, msg.get("Event"))

    def _member(self, msg: Message, at: datetime, out: list[Event], event: str) -> None:
        queue = msg.get("Queue")
        extension = _member_extension(msg)
        if not queue or not extension:
            return
        self.queues.add(queue)
        key = (queue, extension)
        interface = msg.get("Interface") or msg.get("Location")
        if interface:
            self._interfaces[key] = interface
        state = _MEMBER_STATE.get(msg.get("Status"), MemberState.UNKNOWN)
        paused = msg.get("Paused") == "1"
        reason = msg.unescaped("PausedReason") or msg.unescaped("Reason") if paused else ""
        change = {
            "QueueMemberAdded": "added",
            "QueueMemberRemoved": "removed",
            "QueueMemberPause": "paused" if paused else "unpaused",
        }.get(event, "status")
        if change == "removed":
            self._members.pop(key, None)
        else:
            now = (state, paused, reason)
            if change == "status" and self._members.get(key) == now:
                return  # a status repeating what we know (every device change sends one)
            self._members[key] = now
        out.append(
            QueueMemberChanged(
                pbx=self.config.pbx,
                at=at,
                queue=queue,
                extension=extension,
                change=change,
                state=state,
                paused=paused,
                reason=reason[:100],
                name=_name(msg.get("MemberName") or msg.get("Name"))[:100],
            )
        )

    def queue_snapshot(self, items: Iterable[Message], now: datetime) -> list[Event]:
        """After a connect: the items of ``QueueStatus`` (QueueParams, QueueMember, QueueEntry)
        and ``QueueSummary``. Members' states are brought up to date; callers waiting that the
        tracker does not know are picked up, joined as long ago as they have waited."""
        out: list[Event] = []
        self._inband_now = False
        for msg in items:
            name = msg.get("Event")
            queue = msg.get("Queue")
            if queue:
                self.queues.add(queue)
            if name == "QueueMember":
                self._member(msg, now, out, "QueueMemberStatus")
            elif name == "QueueEntry" and queue and msg.get("Uniqueid"):
                if msg.get("Uniqueid") in self._stays:
                    continue
                wait = _int(msg.get("Wait"))
                joined = now - timedelta(seconds=wait)
                ch = self._queue_channel(msg, joined, out)
                if ch is None or ch.call is None:
                    continue
                ch.call.started_at = min(ch.call.started_at, joined)
                self._stays[ch.uniqueid] = QueueStay(queue, joined)
                out.append(
                    QueueJoined(
                        pbx=self.config.pbx,
                        at=joined,
                        call_id=ch.call.call_id,
                        queue=queue,
                        position=_int(msg.get("Position")),
                    )
                )
        return out

    def _on_blind_transfer(self, msg: Message, at: datetime, out: list[Event]) -> None:
        if msg.get("Result") != "Success":
            return
        ch = self._channel(msg, at, out, prefix="Transferer")
        if ch is None or ch.call is None:
            return
        to = self._number(msg.get("Extension"))
        self._explained(ch.call)
        self._transferred(ch.call, TransferKind.BLIND, self._extension(ch), to, at, out)

    def _on_attended_transfer(self, msg: Message, at: datetime, out: list[Event]) -> None:
        if msg.get("Result") != "Success":
            return
        ch = self._channel(msg, at, out, prefix="OrigTransferer")
        if ch is None or ch.call is None:
            return
        target = self._channel(msg, at, out, prefix="TransferTarget", create=False)
        if target is not None:
            to = self._extension(target) if not target.is_trunk else self._number(target.caller_num)
        else:
            to = self._number(msg.get("SecondTransfererConnectedLineNum"))
        self._explained(ch.call)
        self._transferred(ch.call, TransferKind.ATTENDED, self._extension(ch), to, at, out)

    def _explained(self, call: Call) -> None:
        """A transfer event came: the bridge moves it makes are that transfer, not a Redirect."""
        for c in call.channels.values():
            c.moved_from, c.redialed, c.explained = None, False, True

    def _transferred(
        self, call: Call, kind: TransferKind, from_ext: str, to: str, at: datetime, out: list[Event]
    ) -> None:
        self._ensure_started(call, out)
        call.transfers.append((kind, from_ext, to))
        out.append(
            CallTransferred(
                pbx=self.config.pbx,
                at=at,
                call_id=call.call_id,
                transfer=kind,
                from_extension=from_ext,
                to=to,
            )
        )

    def _on_device_state(self, msg: Message, at: datetime, out: list[Event]) -> None:
        device = msg.get("Device")
        tech, _, resource = device.partition("/")
        if tech.upper() not in _PHONE_TECHS or not resource or self._is_trunk(tech, resource):
            return
        presence = _DEVICE_PRESENCE.get(msg.get("State").upper(), Presence.UNKNOWN)
        self._presence_changed(resource, presence, at, out)

    def _on_extension_status(self, msg: Message, at: datetime, out: list[Event]) -> None:
        exten = msg.get("Exten")
        if not exten:
            return
        presence = _EXTENSION_PRESENCE.get(msg.get("Status"), Presence.UNKNOWN)
        self._presence_changed(exten, presence, at, out)

    def _presence_changed(self, extension: str, presence: Presence, at: datetime, out: list[Event]) -> None:
        if self._presence.get(extension) is presence:
            return
        self._presence[extension] = presence
        out.append(PresenceChanged(pbx=self.config.pbx, at=at, extension=extension, presence=presence))


def _name(raw: str) -> str:
    name = unescape(raw).strip()
    return "" if name.lower() in _UNKNOWN else name


def _uniqueid_time(uid: str) -> datetime | None:
    match = _EPOCH_UNIQUEID.match(uid)
    if not match:
        return None
    try:
        return datetime.fromtimestamp(int(match.group(1)), UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _int(text: str) -> int:
    try:
        return max(0, int(text.strip() or 0))
    except ValueError:
        return 0


def _member_extension(msg: Message) -> str:
    """A queue member's extension from its interfaces (``PJSIP/1001``, ``Local/1001@from-queue/n``)."""
    for key in ("StateInterface", "Interface", "Location"):
        value = msg.get(key)
        if value and "/" in value:
            rest = value.partition("/")[2]
            ext = _CHANNEL_SUFFIX.sub("", rest.split("@", 1)[0].split(";", 1)[0].split("/", 1)[0])
            if ext:
                return ext
    return ""


def _parse_duration(text: str) -> timedelta:
    parts = text.split(":")
    try:
        if len(parts) == 3:
            return timedelta(hours=int(parts[0]), minutes=int(parts[1]), seconds=int(parts[2]))
        return timedelta(seconds=int(text))
    except ValueError:
        return timedelta(0)


def _dialstring_number(dialstring: str) -> str:
    """``84951234567@trunk`` / ``trunk/sip:+1555@carrier`` → the dialed number, or ``""``."""
    text = dialstring.rsplit("/", 1)[-1]
    if text.startswith(("sip:", "sips:", "tel:")):
        text = text.split(":", 1)[1]
    text = text.split("@", 1)[0]
    return text if text.lstrip("+").isdigit() else ""


def _interface_extension(msg: Message) -> str:
    """AgentConnect: ``PJSIP/7006`` or ``Local/7006@from-queue/n`` → ``7006``."""
    for key in ("Interface", "DestChannel"):
        value = msg.get(key)
        if value:
            rest = value.partition("/")[2]
            ext = _CHANNEL_SUFFIX.sub("", rest.split("@", 1)[0].split(";", 1)[0])
            if ext:
                return ext
    return msg.get("MemberName")
