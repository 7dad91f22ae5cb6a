"""Agents beside Asterisk: their tokens, the events map they apply, the settings they receive.

The wire protocol between ``callbridge agent`` and the hub (JSON text frames over one
WebSocket the agent opens; see ``docs/agent.md``):

agent → hub
    ``hello``  {version, epoch}: first frame; ``epoch`` names the agent's outbox (a new outbox,
               a new epoch, so sequence numbers may start again at 1).
    ``batch``  {items: [{seq, t: "event"|"raw", body}]}: outbox rows in sequence order.
    ``status`` {ami_up, ami_detail, outbox_depth, outbox_age_seconds, outbox_dropped, live_calls,
               last_event_at}: every few seconds.
    ``bans``   {items: [{address, reason, failures, banned_at, until}]}: the guard's current bans.
    ``result`` {id, ok, value | error: {code, message}}: the outcome of an ``action``.
hub → agent
    ``welcome`` {pbx, high_water, settings}: what the hub already has, and the settings to apply.
    ``reject``  {items: [{seq, reason}]}: rows the hub can never take (sent before the ``ack``
               that covers them): the agent logs them and, with the ack, drops them.
    ``ack``     {seq}: every row up to ``seq`` is committed in the hub's database (or rejected).
    ``settings`` {…}: new settings, applied at once.
    ``action``  {id, name: originate|hangup|redirect|unban|delete_recording, args}.

Nothing here runs code from the hub on the PBX: the events map is data (header comparisons).

Limits (docs/agent.md "Limits"): a frame is at most :data:`MAX_FRAME_BYTES` (the agent builds
batches of at most :data:`AGENT_FRAME_BYTES`), a batch at most :data:`MAX_BATCH_ITEMS` items,
``seq`` a whole number from 1 to 2^63-1. Stored fields are capped: see :func:`decode_item`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from callbridge.domain.errors import (
    AuthenticationFailed,
    CallbridgeError,
    InvalidEvent,
    InvalidInput,
    InvalidNumber,
    PbxError,
    PbxRejected,
    PbxTimeout,
    PbxUnavailable,
)
from callbridge.domain.events import Event, event_from_dict
from callbridge.services.ports import LinkStatus, Originate

AGENT_TOKEN_PREFIX = "cbagent_"  # noqa: S105 - a prefix, not a secret
ENROLLMENT_CODE_PREFIX = "cbenroll_"
DEFAULT_ENROLLMENT_HOURS = 24
MAX_ENROLLMENT_HOURS = 24 * 30
PROTOCOL_VERSION = 1

# WebSocket close codes the agent understands (4000-4999 are for applications).
CLOSE_TOKEN_REFUSED = 4401
CLOSE_REPLACED = 4409
CLOSE_PROTOCOL = 4400
CLOSE_STORE_FAILED = 4503

# Frames and items. The agent's batches are bounded by its batch size (500 rows by default) and by
# AGENT_FRAME_BYTES; the hub takes four times that, and uvicorn is given the same cap.
MAX_FRAME_BYTES = 4 * 2**20
AGENT_FRAME_BYTES = 2**20
MAX_BATCH_ITEMS = 10_000
MAX_AGENT_BATCH = 5_000  # the largest batch_size an agent may be configured with
MAX_SEQ = 2**63 - 1  # the outbox's INTEGER PRIMARY KEY, the hub's BIGINT high-water mark
# An outbox row larger than this is not sent as it is: a raw event is clipped again, an event
# is sent without its body (the hub rejects it and the agent drops it).
MAX_ITEM_BYTES = 256 * 1024
# Raw events (events map): at most this many headers, repeats of one header, characters per
# value and bytes of JSON in all; beyond that, values are cut and the last headers left out.
RAW_MAX_HEADERS = 100
RAW_MAX_REPEATS = 20
RAW_MAX_VALUE = 1000
RAW_MAX_BYTES = 64 * 1024
RAW_MAX_NAME = 64
# Normalized events: identifiers longer than the call log keeps are refused (cutting them
# would merge different calls or phones); free text and numbers are cut to the column's size.
EVENT_ID_LIMITS = {"call_id": 128, "extension": 32, "from_extension": 32, "answered_by": 32, "placed_by": 32}
EVENT_TEXT_LIMITS = {"from_number": 64, "to_number": 64, "to": 64, "from_name": 200, "recording": 500}
# Counts in status and bans frames are stored in 32-bit columns.
MAX_COUNT = 2**31 - 1

MAX_RULES = 100
MAX_CONDITIONS = 10
CONDITION_OPS = ("equals", "starts_with", "regex")
_EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_HEADER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")

# Guard thresholds (fail2ban's asterisk jail defaults: 10 failures in 10 minutes → 10 minutes).
DEFAULT_GUARD: dict[str, Any] = {
    "enabled": False,
    "max_failures": 10,
    "window_seconds": 600,
    "ban_seconds": 600,
    "allow": [],
}


def hash_agent_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_agent_token() -> str:
    return AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)


# -- events map ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    header: str
    op: str
    value: str
    negate: bool = False
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def holds(self, get: Callable[[str], str]) -> bool:
        actual = get(self.header)
        if self.op == "equals":
            result = actual == self.value
        elif self.op == "starts_with":
            result = actual.startswith(self.value)
        else:
            assert self._pattern is not None
            result = self._pattern.search(actual) is not None
        return result != self.negate

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "op": self.op, "value": self.value, "negate": self.negate}


@dataclass(frozen=True, slots=True)
class EventRule:
    """Forward AMI events named ``event`` whose headers meet every condition."""

    event: str
    conditions: tuple[Condition, ...] = ()
    name: str = ""

    def matches(self, event_name: str, get: Callable[[str], str]) -> bool:
        return event_name == self.event and all(c.holds(get) for c in self.conditions)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "event": self.event, "conditions": [c.to_dict() for c in self.conditions]}


def parse_rules(raw: Any) -> list[EventRule]:
    """Check an events map (a JSON list) and build its rules; raises InvalidInput with the reason."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput("the events map is a list of rules")
    if len(raw) > MAX_RULES:
        raise InvalidInput(f"the events map holds at most {MAX_RULES} rules")
    return [_rule(i, item) for i, item in enumerate(raw, 1)]


def _rule(number: int, item: Any) -> EventRule:
    where = f"rule {number}"
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where}: a rule is an object with 'event' and 'conditions'")
    event = str(item.get("event", "")).strip()
    if not _EVENT_NAME.match(event):
        raise InvalidInput(f"{where}: 'event' must be an AMI event name such as Hangup")
    name = str(item.get("name", "") or "").strip()[:100]
    raw_conditions = item.get("conditions") or []
    if not isinstance(raw_conditions, list) or len(raw_conditions) > MAX_CONDITIONS:
        raise InvalidInput(f"{where}: 'conditions' is a list of at most {MAX_CONDITIONS}")
    conditions = []
    for c in raw_conditions:
        if not isinstance(c, Mapping):
            raise InvalidInput(f"{where}: a condition is an object with header, op and value")
        header = str(c.get("header", "")).strip()
        op = str(c.get("op", "equals"))
        value = str(c.get("value", ""))
        if not _HEADER.match(header):
            raise InvalidInput(f"{where}: {header!r} is not an AMI header name")
        if op not in CONDITION_OPS:
            raise InvalidInput(f"{where}: op must be one of {', '.join(CONDITION_OPS)}")
        if len(value) > 500:
            raise InvalidInput(f"{where}: a condition value is at most 500 characters")
        pattern = None
        if op == "regex":
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise InvalidInput(f"{where}: the regex {value!r} is not valid ({exc})") from exc
        conditions.append(Condition(header, op, value, bool(c.get("negate", False)), pattern))
    return EventRule(event, tuple(conditions), name)


class EventsMap:
    """The rules an agent applies to every AMI event (a dict lookup on the event name first)."""

    def __init__(self, rules: Iterable[EventRule] = ()) -> None:
        self.rules = list(rules)
        self._by_event: dict[str, list[EventRule]] = {}
        for rule in self.rules:
            self._by_event.setdefault(rule.event, []).append(rule)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def wants(self, event_name: str, get: Callable[[str], str]) -> bool:
        rules = self._by_event.get(event_name)
        return bool(rules) and any(r.matches(event_name, get) for r in rules or ())


# -- settings pushed to the agent -------------------------------------------------------------


def guard_settings(raw: Any) -> dict[str, Any]:
    """Validated guard thresholds (defaults filled in)."""
    merged = {**DEFAULT_GUARD, **(raw if isinstance(raw, Mapping) else {})}
    out: dict[str, Any] = {"enabled": bool(merged["enabled"])}
    for key, low, high in (
        ("max_failures", 1, 10_000),
        ("window_seconds", 1, 7 * 86400),
        ("ban_seconds", 1, 365 * 86400),
    ):
        try:
            value = int(merged[key])
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"guard {key} must be a whole number") from exc
        if not low <= value <= high:
            raise InvalidInput(f"guard {key} must be between {low} and {high}")
        out[key] = value
    allow = merged.get("allow") or []
    if not isinstance(allow, list) or not all(isinstance(a, str) and len(a) <= 64 for a in allow):
        raise InvalidInput("guard allow is a list of addresses or networks (CIDR)")
    if len(allow) > 500:
        raise InvalidInput("guard allow holds at most 500 networks")
    out["allow"] = [a.strip() for a in allow if a.strip()]
    return out


def agent_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the agent of a PBX receives: built from the PBX's config in the hub."""
    return {
        "trunks": list(config.get("trunks") or []),
        "direction_variable": str(config.get("direction_variable") or "CALLBRIDGE_DIRECTION"),
        "events_map": [r.to_dict() for r in parse_rules(config.get("events_map"))],
        "guard": guard_settings(config.get("guard")),
    }


# -- what the hub stores about agents --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentRecord:
    pbx: str
    token_prefix: str = ""
    token_created_at: datetime | None = None
    revoked: bool = False
    epoch: str = ""
    high_water: int = 0
    version: str = ""
    connected: bool = False
    seen_at: datetime | None = None
    last_event_at: datetime | None = None
    outbox_depth: int = 0
    outbox_age_seconds: float = 0.0
    outbox_dropped: int = 0
    ami_up: bool = False
    ami_detail: str = ""


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """A status frame from an agent."""

    ami_up: bool = False
    ami_detail: str = ""
    outbox_depth: int = 0
    outbox_age_seconds: float = 0.0
    outbox_dropped: int = 0
    live_calls: int = 0
    last_event_at: datetime | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> AgentHealth:
        def num(key: str) -> float:
            return bounded(data.get(key), MAX_COUNT)

        last: datetime | None = None
        raw_last = data.get("last_event_at")
        if isinstance(raw_last, str) and raw_last:
            try:
                last = datetime.fromisoformat(raw_last)
                if last.tzinfo is None:
                    last = None
            except ValueError:
                last = None
        return cls(
            ami_up=bool(data.get("ami_up")),
            ami_detail=str(data.get("ami_detail") or "")[:500],
            outbox_depth=int(num("outbox_depth")),
            outbox_age_seconds=num("outbox_age_seconds"),
            outbox_dropped=int(num("outbox_dropped")),
            live_calls=int(num("live_calls")),
            last_event_at=last,
        )


@dataclass(frozen=True, slots=True)
class Ban:
    pbx: str
    address: str
    reason: str = ""
    failures: int = 0
    banned_at: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class RawEvent:
    id: int
    pbx: str
    name: str
    headers: dict[str, Any]
    at: datetime
    received_at: datetime


class AgentStore(Protocol):
    async def find(self, pbx: str) -> AgentRecord | None: ...
    async def by_token_hash(self, token_hash: str) -> AgentRecord | None: ...
    async def set_token(self, pbx: str, prefix: str, token_hash: str | None) -> None: ...


async def issue_token(store: AgentStore, pbx: str) -> str:
    """A new agent token for ``pbx`` (the old one, if any, stops working). Shown once."""
    secret = new_agent_token()
    await store.set_token(pbx, secret[: len(AGENT_TOKEN_PREFIX) + 6], hash_agent_token(secret))
    return secret


async def revoke_token(store: AgentStore, pbx: str) -> None:
    await store.set_token(pbx, "", None)


async def authenticate(store: AgentStore, secret: str) -> AgentRecord:
    """The agent a token belongs to; raises AuthenticationFailed (forged, revoked, malformed)."""
    secret = secret.strip()
    if not secret.startswith(AGENT_TOKEN_PREFIX) or len(secret) > 200:
        raise AuthenticationFailed("agent token refused: not an agent token")
    found = await store.by_token_hash(hash_agent_token(secret))
    if found is None or found.revoked:
        raise AuthenticationFailed("agent token refused: unknown or revoked; issue a new one in the hub")
    return found


# -- enrollment: a short-lived, single-use code exchanged for the agent's token ------------------


@dataclass(frozen=True, slots=True)
class Enrollment:
    pbx: str
    code_prefix: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


class EnrollmentStore(AgentStore, Protocol):
    async def add_enrollment(
        self, pbx: str, prefix: str, code_hash: str, created_at: datetime, expires_at: datetime
    ) -> None: ...
    async def enrollment(self, code_hash: str) -> Enrollment | None: ...
    async def use_enrollment(self, code_hash: str, at: datetime) -> bool: ...


_UNKNOWN_CODE = (
    "enrollment code refused: unknown code; ask the hub's admin for a new one (`callbridge pbx enroll NAME`)"
)


async def issue_enrollment(
    store: EnrollmentStore, pbx: str, hours: float = DEFAULT_ENROLLMENT_HOURS, now: datetime | None = None
) -> tuple[str, Enrollment]:
    """A new enrollment code for ``pbx`` (shown once, stored hashed), good once until it expires.
    Codes issued before stay good: each machine being set up may hold its own."""
    if not 0 < hours <= MAX_ENROLLMENT_HOURS:
        raise InvalidInput(f"an enrollment code lives from 1 hour to {MAX_ENROLLMENT_HOURS} hours")
    now = now or datetime.now(UTC)
    code = ENROLLMENT_CODE_PREFIX + secrets.token_urlsafe(15)
    expires = now + timedelta(hours=hours)
    prefix = code[: len(ENROLLMENT_CODE_PREFIX) + 4]
    await store.add_enrollment(pbx, prefix, hash_agent_token(code), now, expires)
    return code, Enrollment(pbx, prefix, now, expires)


async def redeem_enrollment(
    store: EnrollmentStore, code: str, now: datetime | None = None
) -> tuple[str, str]:
    """Exchange an enrollment code for a new agent token of its PBX: ``(pbx, token)``.

    Raises AuthenticationFailed, with words, for an unknown (or forged) code, a used one and an
    expired one. The code is spent by a conditional update, so two machines racing with the same
    code cannot both get a token. The PBX's previous token, if any, stops working."""
    now = now or datetime.now(UTC)
    code = code.strip()
    if not code.startswith(ENROLLMENT_CODE_PREFIX) or len(code) > 100:
        raise AuthenticationFailed(_UNKNOWN_CODE)
    code_hash = hash_agent_token(code)
    found = await store.enrollment(code_hash)
    if found is None:
        raise AuthenticationFailed(_UNKNOWN_CODE)
    if found.used_at is not None:
        raise AuthenticationFailed(
            f"enrollment code refused: it was already used ({found.used_at:%Y-%m-%d %H:%M} UTC); a code "
            f"works once: ask for a new one (`callbridge pbx enroll {found.pbx}`)"
        )
    if found.expires_at <= now:
        raise AuthenticationFailed(
            f"enrollment code refused: it expired at {found.expires_at:%Y-%m-%d %H:%M} UTC; ask for a "
            f"new one (`callbridge pbx enroll {found.pbx}`)"
        )
    if not await store.use_enrollment(code_hash, now):
        raise AuthenticationFailed(
            f"enrollment code refused: it was already used; a code works once: ask for a new one "
            f"(`callbridge pbx enroll {found.pbx}`)"
        )
    return found.pbx, await issue_token(store, found.pbx)


def bounded(value: Any, cap: float) -> float:
    """A number reported by an agent, within [0, cap] (0 when it is none, NaN or no number)."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if math.isnan(number):
        return 0.0
    return min(max(0.0, number), float(cap))


def parse_ban_items(pbx: str, items: Sequence[Any]) -> list[Ban]:
    bans: list[Ban] = []
    for item in items[:10_000]:
        if not isinstance(item, Mapping) or not isinstance(item.get("address"), str):
            continue

        def when(key: str, item: Mapping[str, Any] = item) -> datetime | None:
            value = item.get(key)
            if not isinstance(value, str) or not value:
                return None
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return None
            return parsed if parsed.tzinfo is not None else None

        failures = int(bounded(item.get("failures") or item.get("count"), MAX_COUNT))
        bans.append(
            Ban(
                pbx=pbx,
                address=str(item["address"])[:64],
                reason=str(item.get("reason") or "")[:200],
                failures=failures,
                banned_at=when("banned_at") or when("at"),
                until=when("until"),
            )
        )
    return bans


# -- batches from the agent -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchItem:
    seq: int
    kind: Any  # "event" | "raw"; anything else is rejected by decode_item
    body: Any


RawItem = tuple[str, dict[str, Any], datetime]


def parse_batch(items: Any) -> list[BatchItem]:
    """The items of a ``batch`` frame; InvalidInput when the frame as a whole is unusable (the
    hub closes the link with 1008): no list, too many items, an item that is no object, or whose
    ``seq`` is no whole number from 1 to 2^63-1 (a float, a string, a boolean, out of range)."""
    if not isinstance(items, list):
        raise InvalidInput("a batch's items are a list")
    if len(items) > MAX_BATCH_ITEMS:
        raise InvalidInput(f"a batch holds at most {MAX_BATCH_ITEMS} items")
    out: list[BatchItem] = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise InvalidInput(f"batch item {number} is not an object")
        seq = item.get("seq")
        if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
            raise InvalidInput(f"batch item {number}: seq must be a whole number from 1 to 2^63-1")
        out.append(BatchItem(seq, item.get("t"), item.get("body")))
    return out


def decode_item(pbx: str, item: BatchItem) -> Event | RawItem:
    """The event or raw event an item carries, with its fields capped; InvalidInput (the reason)
    when the hub can never take it: the agent is told and drops it."""
    body = item.body
    if item.kind not in ("event", "raw"):
        raise InvalidInput(f"unknown item type {str(item.kind)[:20]!r}")
    if not isinstance(body, dict):
        raise InvalidInput("the item's body is not an object")
    if item.kind == "raw":
        return decode_raw(body)
    data = dict(body)
    for name, limit in EVENT_ID_LIMITS.items():
        value = data.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise InvalidInput(f"{name} is longer than {limit} characters")
    for name, limit in EVENT_TEXT_LIMITS.items():
        value = data.get(name)
        if isinstance(value, str) and len(value) > limit:
            data[name] = value[:limit]
    data["pbx"] = pbx
    try:
        return event_from_dict(data)
    except InvalidEvent as exc:
        raise InvalidInput(f"not a valid event: {exc.message[:200]}") from exc


def decode_raw(body: Mapping[str, Any]) -> RawItem:
    name, headers, at = body.get("name"), body.get("headers"), body.get("at")
    if not isinstance(name, str) or not name or not isinstance(headers, dict) or not isinstance(at, str):
        raise InvalidInput("a raw event has a name, headers (an object) and a time")
    try:
        when = datetime.fromisoformat(at[:64])
    except ValueError as exc:
        raise InvalidInput("a raw event's time is not an ISO 8601 time") from exc
    if when.tzinfo is None:
        raise InvalidInput("a raw event's time has no UTC offset")
    return name[:RAW_MAX_NAME], clip_headers(headers), when


def _clip_value(value: Any) -> str:
    return (value if isinstance(value, str) else str(value))[:RAW_MAX_VALUE]


def clip_headers(headers: Mapping[Any, Any]) -> dict[str, Any]:
    """A raw event's headers within the RAW_MAX_* limits (values cut, the last headers left out
    once the JSON would pass RAW_MAX_BYTES); every value a string or a list of strings."""
    out: dict[str, Any] = {}
    size = 2
    for key, value in itertools.islice(headers.items(), RAW_MAX_HEADERS):
        name = str(key)[:RAW_MAX_NAME]
        clipped: str | list[str] = (
            [_clip_value(v) for v in value[:RAW_MAX_REPEATS]]
            if isinstance(value, list)
            else _clip_value(value)
        )
        cost = len(json.dumps(name)) + len(json.dumps(clipped)) + 4  # ": " and ", "
        if size + cost > RAW_MAX_BYTES:
            break
        out[name] = clipped
        size += cost
    return out


# -- the hub's side of a connected agent -----------------------------------------------------

Sender = Callable[[dict[str, Any]], Awaitable[None]]
Closer = Callable[[str], Awaitable[None]]

_ERRORS: dict[str, type[CallbridgeError]] = {
    "pbx_rejected": PbxRejected,
    "pbx_timeout": PbxTimeout,
    "pbx_unavailable": PbxUnavailable,
    "invalid_number": InvalidNumber,
    "invalid_input": InvalidInput,
}


@dataclass(slots=True)
class IngestTurn:
    """Whose turn it is to store an agent's events, in this hub process.

    One batch of a PBX's events is stored at a time, whichever connection of its agent sent it.
    A connection that goes away lets the batch it was storing finish (a write cancelled midway
    can leave SQLite's write lock held), and the next connection starts where it ended:
    ``committed`` is the (outbox epoch, high-water mark) of the last batch stored here."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    committed: tuple[str, int] | None = None


class AgentLink:
    """The :class:`~callbridge.services.ports.PbxLink` of a PBX served by an agent.

    It sits in the hub's link supervisor like an embedded link, so click-to-call does not care
    how the PBX is reached. Actions go over the agent's WebSocket and wait for their result;
    when no agent is connected they fail at once with a message saying so.
    """

    def __init__(self, name: str, *, action_timeout: float = 40.0) -> None:
        self.name = name
        self.action_timeout = action_timeout
        self.version = ""
        self.health = AgentHealth()
        self.connected_at: datetime | None = None
        self.disconnected_at: datetime | None = None
        self.last_event_at: datetime | None = None
        self._send: Sender | None = None
        self._close: Closer | None = None
        self._generation = 0
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    # -- connection -----------------------------------------------------------------------------

    def attach(self, send: Sender, version: str, close: Closer | None = None) -> int:
        self._generation += 1
        self._send = send
        self._close = close
        self.version = version
        self.connected_at = datetime.now(UTC)
        return self._generation

    def detach(self, generation: int) -> None:
        if generation != self._generation:
            return  # a newer connection took over
        self._send = None
        self._close = None
        self.disconnected_at = datetime.now(UTC)
        self.health = replace(self.health, ami_up=False)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PbxUnavailable("the agent disconnected before answering"))
        self._pending.clear()

    @property
    def connected(self) -> bool:
        return self._send is not None

    def resolve(self, msg: Mapping[str, Any]) -> None:
        future = self._pending.pop(str(msg.get("id")), None)
        if future is None or future.done():
            return
        if msg.get("ok"):
            future.set_result(msg.get("value"))
            return
        error = msg.get("error") if isinstance(msg.get("error"), Mapping) else {}
        assert isinstance(error, Mapping)
        cls = _ERRORS.get(str(error.get("code")), PbxError)
        future.set_exception(cls(str(error.get("message") or "the PBX refused")[:500]))

    # -- PbxLink --------------------------------------------------------------------------------

    def status(self) -> LinkStatus:
        h = self.health
        if self._send is None:
            since = f" since {self.disconnected_at:%Y-%m-%d %H:%M:%S} UTC" if self.disconnected_at else ""
            detail = f"agent not connected{since}"
        else:
            detail = f"agent {self.version}, AMI {'up' if h.ami_up else 'down'}"
            if not h.ami_up and h.ami_detail:
                detail += f" ({h.ami_detail})"
        if h.outbox_depth:
            detail += f", outbox {h.outbox_depth} waiting (oldest {h.outbox_age_seconds:.0f} s)"
        if h.outbox_dropped:
            detail += f", OUTBOX OVERFLOWED: {h.outbox_dropped} events dropped"
        return LinkStatus(
            connected=self._send is not None and h.ami_up,
            detail=detail,
            last_event_at=self.last_event_at,
            extra={
                "agent_connected": str(self._send is not None).lower(),
                "version": self.version,
                "ami_up": str(h.ami_up).lower(),
                "outbox_depth": str(h.outbox_depth),
                "outbox_age_seconds": f"{h.outbox_age_seconds:.1f}",
                "outbox_dropped": str(h.outbox_dropped),
                "live_calls": str(h.live_calls),
            },
        )

    async def run(self) -> None:
        # The agent dials in; there is nothing to run from the hub's side.
        await asyncio.Event().wait()

    async def originate(self, request: Originate) -> str:
        args = {
            "extension": request.extension,
            "number": request.number,
            "caller_id": request.caller_id,
            "auto_answer": request.auto_answer,
            "timeout_seconds": request.timeout_seconds,
        }
        value = await self.call("originate", args, wait=request.timeout_seconds + 15.0)
        return str(value)

    async def hangup(self, call_id: str) -> None:
        await self.call("hangup", {"call_id": call_id})

    async def redirect(self, call_id: str, destination: str) -> None:
        await self.call("redirect", {"call_id": call_id, "destination": destination})

    async def unban(self, address: str) -> None:
        await self.call("unban", {"address": address})

    async def notify(self, msg: dict[str, Any]) -> None:
        """Send a frame that needs no answer (new settings); PbxUnavailable when offline."""
        send = self._send
        if send is None:
            raise PbxUnavailable(f"the agent of PBX {self.name} is not connected")
        try:
            await send(msg)
        except (ConnectionError, RuntimeError) as exc:
            raise PbxUnavailable(f"the agent of PBX {self.name} could not be reached") from exc

    async def disconnect(self, reason: str) -> None:
        """Close the agent's connection as refused (its token was revoked or rotated)."""
        close = self._close
        if close is not None:
            await close(reason)

    async def call(self, name: str, args: dict[str, Any], wait: float | None = None) -> Any:
        send = self._send
        if send is None:
            since = f" (last seen {self.disconnected_at:%Y-%m-%d %H:%M} UTC)" if self.disconnected_at else ""
            raise PbxUnavailable(
                f"the agent of PBX {self.name} is not connected{since}; "
                "check `callbridge agent` on the PBX host"
            )
        action_id = str(next(self._ids))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            await send({"type": "action", "id": action_id, "name": name, "args": args})
            return await asyncio.wait_for(future, wait or self.action_timeout)
        except TimeoutError as exc:
            raise PbxTimeout(f"the agent of PBX {self.name} did not answer in time") from exc
        except (ConnectionError, RuntimeError) as exc:
            raise PbxUnavailable(f"the agent of PBX {self.name} could not be reached") from exc
        finally:
            self._pending.pop(action_id, None)
