"""Security guard: decides which remote addresses to ban, from Asterisk security events.

Pure logic: no sockets, no subprocesses, no clock. Every input carries its time, every output is
a typed decision that the caller hands to a firewall backend (``callbridge.agent.firewall``).

Interface for the agent
=======================

::

    from callbridge.agent.guard import SecurityGuard, GuardSettings, Ban, Unban
    from callbridge.agent.firewall import NftablesBackend, apply_decisions

    guard = SecurityGuard(GuardSettings(allow_list=("192.0.2.0/24",)))   # defaults: 10 / 10 min
    firewall = NftablesBackend()          # or DryRunBackend() where nftables is not available
    await firewall.setup()

    # 1. every AMI event (a codec Message or any str→str mapping); cheap for non-security events
    decisions = guard.observe(message, received_at=datetime.now(UTC))
    # 2. every few seconds (expired bans become Unban, idle counters are dropped)
    decisions += guard.tick(datetime.now(UTC))
    # 3. the hub lifted a ban / pushed new settings (counts are kept)
    decisions += guard.lift("198.51.100.7", now)
    decisions += guard.replace_settings(GuardSettings.from_dict(payload), now)

    await apply_decisions(firewall, decisions)   # Ban → add set element with timeout, Unban → delete
    # report decisions to the hub; guard.active_bans() lists what is banned right now

Or, ready-made for the agent runner's duck type (sync calls, firewall work in a background task):
``GuardService(await make_backend(cfg.guard_backend))`` from ``callbridge.agent.firewall`` with
``feed(msg, received_at)``, ``configure(dict)``, ``unban(address)``, ``bans_for_hub()``.

Time: an event's time is its ``Timestamp`` header (AMI ``timestampevents = yes``), else its
``EventTV`` (every security event has one), else ``received_at``. The agent runs on the Asterisk
host, so the PBX clock and the agent clock are the same clock. Times are UTC-aware datetimes.

What counts as a failure (``reference/asterisk_ami.md`` §3)
--------------------------------------------------------------
``ChallengeResponseFailed``, ``InvalidAccountID``, ``InvalidPassword``, ``FailedACL``, from any
service (PJSIP, SIP, IAX2, AMI itself). ``ChallengeSent`` is *not* a failure: every legitimate
REGISTER gets one. PJSIP reports one request to an unknown account twice, as ``InvalidAccountID``
and then ``ChallengeResponseFailed`` with AccountID ``<unknown>`` and the same SessionID: that
second event is not counted again (it is paired with the first, one for one, so an attacker gains
nothing). Each request to an unknown account still counts, so a flood for a non-existent user
(unauthenticated REGISTER + authenticated retry = two requests) is banned after 5 attempts.

Counting: per address (port ignored), a sliding window: a failure at ``t`` is in the window that
ends at ``T`` when ``T - t < window``. The failure that brings the count to ``max_failures`` yields
one :class:`Ban`; counts restart from zero after it. Failures seen while a ban is active (packets
already in flight) are not counted again.

Escalation: the n-th ban of an address within ``recidive_window`` of its previous ban lasts
``ban_time * escalation_factor ** (n - 1)``, at most ``max_ban_time``.

``SuccessfulAuth``: clears the failures recorded for *that* service and account from that address
(the user who mistyped a password and then got it right). It never whitelists the address:
failures for other accounts stay counted, later failures count as usual, an active ban stays.

Never banned: loopback (127.0.0.0/8, ::1, and IPv4-mapped forms), unspecified addresses, and the
networks in ``allow_list``. Their events are ignored.

Malformed input (missing or unparsable ``RemoteAddress``, no usable time, non-string values) is
ignored and counted in :attr:`SecurityGuard.stats`; it never raises.
"""

from __future__ import annotations

import ipaddress
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FAILURE_EVENTS = frozenset({"ChallengeResponseFailed", "InvalidAccountID", "InvalidPassword", "FailedACL"})
SUCCESS_EVENT = "SuccessfulAuth"
TRANSPORTS = frozenset({"UDP", "TCP", "TLS", "WS", "WSS", "SCTP"})
UNKNOWN_ACCOUNT = "<unknown>"

# InvalidAccountID and its ChallengeResponseFailed twin arrive within milliseconds.
_PAIR_WINDOW = timedelta(seconds=2)
_MAX_PAIRS_PER_ADDRESS = 64
_MAX_ACCOUNT_CHARS = 40
_EARLIEST = datetime(1971, 1, 1, tzinfo=UTC)
_LATEST = datetime(2999, 12, 31, tzinfo=UTC)


class Headers(Protocol):
    """What the guard reads from an event: the codec's ``Message`` fits, so does a dict."""

    def get(self, key: str, /) -> object: ...


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class GuardSettings:
    """Thresholds; replaceable at run time with :meth:`SecurityGuard.replace_settings`.

    Defaults follow fail2ban's ``[asterisk]`` jail (maxretry 10, findtime 10m, bantime 10m).
    """

    max_failures: int = 10
    window: timedelta = timedelta(minutes=10)
    ban_time: timedelta = timedelta(minutes=10)
    escalation_factor: float = 2.0
    max_ban_time: timedelta = timedelta(days=1)
    recidive_window: timedelta = timedelta(days=1)
    allow_list: tuple[str, ...] = ()
    max_tracked_addresses: int = 100_000
    networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        for name in ("window", "ban_time", "max_ban_time", "recidive_window"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if not 1.0 <= self.escalation_factor <= 100.0:  # also refuses NaN
            raise ValueError("escalation_factor must be between 1 and 100")
        if self.max_ban_time > timedelta(days=365) or self.window > timedelta(days=365):
            raise ValueError("max_ban_time and window must not exceed 365 days")
        if self.max_ban_time < self.ban_time:
            raise ValueError("max_ban_time must not be shorter than ban_time")
        if self.max_tracked_addresses < 1:
            raise ValueError("max_tracked_addresses must be at least 1")
        if isinstance(self.allow_list, str):
            raise ValueError("allow_list is a sequence of CIDR strings, not one string")
        nets: list[IPNetwork] = []
        for entry in self.allow_list:
            try:
                nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"allow_list entry {entry!r} is not an IP network") from exc
        object.__setattr__(self, "allow_list", tuple(str(n) for n in nets))
        object.__setattr__(self, "networks", tuple(nets))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuardSettings:
        """Build from the hub's JSON: durations in seconds (``window_seconds`` …).

        Unknown keys are refused (a typo must not silently keep a default)."""
        durations = {
            "window_seconds": "window",
            "ban_time_seconds": "ban_time",
            "max_ban_time_seconds": "max_ban_time",
            "recidive_window_seconds": "recidive_window",
        }
        plain = {"max_failures", "escalation_factor", "allow_list", "max_tracked_addresses"}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in durations:
                kwargs[durations[key]] = timedelta(seconds=float(value))
            elif key == "allow_list":
                kwargs[key] = tuple(str(v) for v in value)
            elif key in plain:
                kwargs[key] = value
            else:
                raise ValueError(f"unknown guard setting {key!r}")
        return cls(**kwargs)

    def ban_duration(self, offence: int) -> timedelta:
        """How long the ``offence``-th ban (1-based) of an address lasts."""
        duration = self.ban_time
        for _ in range(min(offence, 64) - 1):
            if duration >= self.max_ban_time:
                break
            duration = duration * self.escalation_factor
        return min(duration, self.max_ban_time)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class RemoteAddress:
    """Parsed ``RemoteAddress`` header: ``IPV4/UDP/1.2.3.4/5060``, ``IPV6/TCP/2001:db8::1/5061``."""

    address: IPAddress
    port: int
    transport: str | None


@dataclass(frozen=True, slots=True)
class Ban:
    """Ban ``address`` until ``until`` (``duration`` after the deciding failure at ``at``)."""

    address: IPAddress
    until: datetime
    reason: str
    count: int
    duration: timedelta
    at: datetime
    offence: int = 1
    accounts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unban:
    """Lift the ban on ``address``; ``reason`` is ``expired``, ``lifted`` or ``allow-listed``."""

    address: IPAddress
    at: datetime
    reason: str


Decision = Ban | Unban


@dataclass
class GuardStats:
    """Why events were not counted (for health reports; never raises)."""

    failures: int = 0
    successes: int = 0
    paired: int = 0
    protected: int = 0
    while_banned: int = 0
    malformed: int = 0
    untimed: int = 0
    evicted: int = 0


@dataclass(slots=True)
class _Failure:
    when: datetime
    service: str
    account: str
    kind: str


@dataclass(slots=True)
class _Record:
    failures: deque[_Failure] = field(default_factory=deque)
    unknown_sessions: dict[str, datetime] = field(default_factory=dict)
    ban: Ban | None = None
    offences: int = 0
    last_offence: datetime | None = None


# --------------------------------------------------------------------------- parsing


def parse_remote_address(value: object) -> RemoteAddress | None:
    """Parse an Asterisk address string; ``None`` when it is not one (never raises)."""
    if not isinstance(value, str) or len(value) > 200:
        return None
    parts = value.strip().split("/")
    if len(parts) not in (3, 4):
        return None
    family, port_text = parts[0].upper(), parts[-1]
    if family not in ("IPV4", "IPV6"):
        return None
    transport: str | None = None
    if len(parts) == 4:
        transport = parts[1].upper()
        if transport not in TRANSPORTS:
            return None
    host = parts[-2].strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        return None
    address = _parse_ip(host)
    if address is None:
        return None
    if family == "IPV4" and address.version != 4 and not _is_mapped(host):
        return None
    if family == "IPV6" and ":" not in host:
        return None
    return RemoteAddress(address=address, port=int(port_text), transport=transport)


def _is_mapped(host: str) -> bool:
    return host.lower().startswith("::ffff:")


def _parse_ip(host: str) -> IPAddress | None:
    """An address, with IPv4-mapped IPv6 folded to IPv4 and any ``%zone`` dropped."""
    if not host.isascii():
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalize_address(value: str | IPAddress) -> IPAddress:
    """Validate an address given by a person or the hub; raises ``ValueError`` when invalid."""
    address = _parse_ip(str(value).strip())
    if address is None:
        raise ValueError(f"{value!r} is not an IP address")
    return address


def event_time(event: Headers, received_at: datetime | None = None) -> datetime | None:
    """``Timestamp`` (epoch seconds), else ``EventTV`` (ISO 8601), else ``received_at``.

    A header time outside 1971-2999 is not believed (it would also overflow ban arithmetic)."""
    stamp = _header(event, "Timestamp")
    if stamp:
        try:
            seconds = float(stamp)
            if math.isfinite(seconds):
                parsed = datetime.fromtimestamp(seconds, UTC)
                if _EARLIEST <= parsed <= _LATEST:
                    return parsed
        except (ValueError, OverflowError, OSError):
            pass
    tv = _header(event, "EventTV")
    if tv:
        try:
            parsed = datetime.fromisoformat(tv.strip())
            parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            if _EARLIEST <= parsed <= _LATEST:
                return parsed
        except (ValueError, OverflowError):
            pass
    if received_at is not None:
        return received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC)
    return None


def _header(event: Headers, key: str) -> str:
    try:
        value = event.get(key)
    except Exception:  # a hostile mapping must not take the AMI link down
        return ""
    return value if isinstance(value, str) else ""


def _clean_account(value: str) -> str:
    # AccountID is attacker-controlled (it is the SIP From user): keep it printable and short.
    text = "".join(ch if ch.isprintable() else "?" for ch in value)
    return text[:_MAX_ACCOUNT_CHARS]


# --------------------------------------------------------------------------- the guard


class SecurityGuard:
    """Counts authentication failures per address and decides bans (see the module doc)."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self._settings = settings or GuardSettings()
        self._records: dict[IPAddress, _Record] = {}
        self._now: datetime | None = None
        self.stats = GuardStats()

    @property
    def settings(self) -> GuardSettings:
        return self._settings

    # -- inputs

    def observe(self, event: Headers, received_at: datetime | None = None) -> list[Decision]:
        """Feed one AMI event; returns the decisions it causes (usually none)."""
        name = _header(event, "Event")
        if name not in FAILURE_EVENTS and name != SUCCESS_EVENT:
            return []
        remote = parse_remote_address(_header(event, "RemoteAddress"))
        if remote is None:
            self.stats.malformed += 1
            return []
        when = event_time(event, received_at)
        if when is None:
            self.stats.untimed += 1
            return []
        self._advance(when)
        address = remote.address
        if self.is_protected(address):
            self.stats.protected += 1
            return []
        service = _clean_account(_header(event, "Service"))
        account = _clean_account(_header(event, "AccountID"))
        if name == SUCCESS_EVENT:
            self.stats.successes += 1
            self._success(address, service, account)
            return []
        session = _header(event, "SessionID")[:200]
        return self._failure(address, when, name, service, account, session)

    def tick(self, now: datetime) -> list[Decision]:
        """Expire bans that ended (→ :class:`Unban`), drop idle counters. Call periodically."""
        self._advance(now)
        ref = self._ref(now)
        out: list[Decision] = []
        for address in list(self._records):
            record = self._records[address]
            if record.ban is not None and record.ban.until <= ref:
                out.append(Unban(address=address, at=record.ban.until, reason="expired"))
                record.ban = None
            self._prune(record, ref)
            if self._idle(record, ref):
                del self._records[address]
        return out

    def lift(self, address: str | IPAddress, now: datetime) -> list[Decision]:
        """An operator lifted the ban: forget the address (counts and offence history).

        Always returns one :class:`Unban`, also for a ban the guard did not know about (e.g. one
        found in the firewall after a restart), so the caller can apply it unconditionally.
        Raises ``ValueError`` for something that is not an IP address."""
        ip = normalize_address(address)
        self._records.pop(ip, None)
        return [Unban(address=ip, at=now, reason="lifted")]

    def adopt(self, address: str | IPAddress, until: datetime, now: datetime) -> None:
        """Register a ban that already exists in the firewall (agent restart)."""
        ip = normalize_address(address)
        if self.is_protected(ip) or until <= now:
            return
        record = self._records.setdefault(ip, _Record())
        record.ban = Ban(
            address=ip,
            until=until,
            reason="ban found in the firewall at start",
            count=0,
            duration=until - now,
            at=now,
            offence=max(record.offences, 1),
        )
        record.offences = max(record.offences, 1)
        record.last_offence = now

    def replace_settings(self, settings: GuardSettings, now: datetime) -> list[Decision]:
        """Swap thresholds; counts and ban history are kept.

        Addresses that the new allow-list covers are forgotten, and unbanned if banned. A lower
        ``max_failures`` takes effect at the address's next failure."""
        self._settings = settings
        out: list[Decision] = []
        for address in list(self._records):
            if self.is_protected(address):
                record = self._records.pop(address)
                if record.ban is not None:
                    out.append(Unban(address=address, at=now, reason="allow-listed"))
        return out

    # -- queries

    def is_protected(self, address: IPAddress) -> bool:
        """Loopback, unspecified, or allow-listed: never banned."""
        if address.is_loopback or address.is_unspecified:
            return True
        return any(address in net for net in self._settings.networks)

    def failures(self, address: str | IPAddress) -> int:
        """Failures from ``address`` in the current window (as of the latest time seen)."""
        record = self._records.get(normalize_address(address))
        if record is None:
            return 0
        if self._now is not None:
            self._prune(record, self._now)
        return len(record.failures)

    def active_bans(self) -> list[Ban]:
        """Bans not yet expired as of the latest time seen, oldest first."""
        bans = [
            r.ban
            for r in self._records.values()
            if r.ban is not None and (self._now is None or r.ban.until > self._now)
        ]
        return sorted(bans, key=lambda b: (b.at, str(b.address)))

    def offences(self, address: str | IPAddress) -> int:
        record = self._records.get(normalize_address(address))
        return 0 if record is None else record.offences

    # -- internals

    def _advance(self, when: datetime) -> None:
        # High-water mark: a late event does not move the window backwards.
        if self._now is None or when > self._now:
            self._now = when

    def _ref(self, when: datetime) -> datetime:
        return when if self._now is None or when > self._now else self._now

    def _prune(self, record: _Record, ref: datetime) -> None:
        window = self._settings.window
        while record.failures and ref - record.failures[0].when >= window:
            record.failures.popleft()
        if record.unknown_sessions:
            stale = [s for s, t in record.unknown_sessions.items() if ref - t > _PAIR_WINDOW]
            for session in stale:
                del record.unknown_sessions[session]

    def _idle(self, record: _Record, ref: datetime) -> bool:
        if record.failures or record.ban is not None or record.unknown_sessions:
            return False
        last = record.last_offence
        return last is None or ref - last >= self._settings.recidive_window

    def _record(self, address: IPAddress) -> _Record:
        record = self._records.pop(address, None)
        if record is None:
            record = _Record()
            self._evict()
        self._records[address] = record  # most recently used goes last
        return record

    def _evict(self) -> None:
        limit = self._settings.max_tracked_addresses
        if len(self._records) < limit:
            return
        for address in list(self._records):
            if len(self._records) < limit:
                break
            if self._records[address].ban is None:
                del self._records[address]
                self.stats.evicted += 1

    def _success(self, address: IPAddress, service: str, account: str) -> None:
        record = self._records.get(address)
        if record is None:
            return
        kept = [f for f in record.failures if (f.service, f.account) != (service, account)]
        record.failures = deque(kept)

    def _failure(
        self,
        address: IPAddress,
        when: datetime,
        kind: str,
        service: str,
        account: str,
        session: str,
    ) -> list[Decision]:
        out: list[Decision] = []
        record = self._record(address)
        ref = self._ref(when)
        if record.ban is not None:
            if record.ban.until > ref:
                self.stats.while_banned += 1
                return []
            # expired while nobody called tick(): say so before counting afresh
            out.append(Unban(address=address, at=record.ban.until, reason="expired"))
            record.ban = None
        self._prune(record, ref)
        twin = kind == "ChallengeResponseFailed" and account == UNKNOWN_ACCOUNT and session
        if twin and record.unknown_sessions.pop(session, None) is not None:
            self.stats.paired += 1
            return out
        if kind == "InvalidAccountID" and session:
            if len(record.unknown_sessions) >= _MAX_PAIRS_PER_ADDRESS:
                record.unknown_sessions.pop(next(iter(record.unknown_sessions)))
            record.unknown_sessions[session] = when
        if ref - when >= self._settings.window:
            return out  # too late to matter
        self.stats.failures += 1
        failure = _Failure(when=when, service=service, account=account, kind=kind)
        if record.failures and record.failures[-1].when > when:
            items = sorted([*record.failures, failure], key=lambda f: f.when)
            record.failures = deque(items)
        else:
            record.failures.append(failure)
        count = len(record.failures)
        if count < self._settings.max_failures:
            return out
        out.append(self._ban(address, record, when, count))
        return out

    def _ban(self, address: IPAddress, record: _Record, when: datetime, count: int) -> Ban:
        settings = self._settings
        last = record.last_offence
        recent = last is not None and when - last < settings.recidive_window
        offence = record.offences + 1 if recent else 1
        duration = settings.ban_duration(offence)
        kinds: dict[str, int] = {}
        accounts: dict[str, None] = {}
        for f in record.failures:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
            accounts[f"{f.service}:{f.account}"] = None
        summary = ", ".join(f"{k}×{n}" for k, n in sorted(kinds.items()))
        reason = f"{count} failed authentications within {settings.window} ({summary})"
        if offence > 1:
            reason += f"; repeat offence #{offence}"
        ban = Ban(
            address=address,
            until=when + duration,
            reason=reason,
            count=count,
            duration=duration,
            at=when,
            offence=offence,
            accounts=tuple(list(accounts)[:10]),
        )
        record.ban = ban
        record.offences = offence
        record.last_offence = when
        record.failures.clear()
        record.unknown_sessions.clear()
        return ban
