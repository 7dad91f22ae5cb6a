"""Adding, editing and describing PBXs: what each kind needs, checked before anything is stored."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callbridge.domain.errors import InvalidInput
from callbridge.domain.pbx import PbxKind, PbxRecord, validate_pbx_name

_HOST = re.compile(r"^[A-Za-z0-9.:_-]{1,253}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_QUEUE_NUMBER = re.compile(r"^[0-9]{1,15}$")
_QUEUE_NAME = re.compile(r"^[^\s/|]{1,64}$")  # as a queue's name in the API's paths
MAX_QUEUES = 200


def _known_timezone(name: str) -> bool:
    if not name or len(name) > 64 or ".." in name or name.startswith("/"):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_queue_numbers(items: Iterable[str]) -> dict[str, str]:
    """``6400`` or ``6400=sales`` items (a form's or the CLI's words) → number → name."""
    out: dict[str, str] = {}
    for item in items:
        number, _, name = item.strip().partition("=")
        if number.strip() or name.strip():
            out[number.strip()] = name.strip()
    return out


def validate_queue_numbers(queues: Mapping[str, str]) -> dict[str, str]:
    """A Yeastar PBX's queues: number → name (the number itself when no name is given).
    Raises InvalidInput in words for anything else."""
    if len(queues) > MAX_QUEUES:
        raise InvalidInput(f"at most {MAX_QUEUES} queue numbers per PBX")
    out: dict[str, str] = {}
    for number, name in queues.items():
        if not isinstance(number, str) or not _QUEUE_NUMBER.match(number):
            raise InvalidInput(
                f"queue number {str(number)[:40]!r} is not valid: give the queue's extension number "
                "on the PBX (digits only, e.g. 6400)"
            )
        name = (name or "").strip() if isinstance(name, str) else name
        if not isinstance(name, str):
            raise InvalidInput(f"the name of queue {number} must be text")
        name = name or number
        if not _QUEUE_NAME.match(name):
            raise InvalidInput(
                f"queue name {name[:70]!r} (number {number}) is not valid: up to 64 characters, "
                "no spaces, '/' or '|'"
            )
        if name in out.values():
            raise InvalidInput(f"two queue numbers are both named {name!r}: give each its own name")
        out[number] = name
    return out


def yeastar_queues(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A stored Yeastar config's queues as (number, name) pairs (see validate_queue_numbers)."""
    queues = config.get("queues")
    if not isinstance(queues, dict):
        return ()
    return tuple((str(number), str(name or number)) for number, name in sorted(queues.items()))


class PbxStore(Protocol):
    async def add(
        self, name: str, kind: PbxKind, config: dict[str, Any], secrets: dict[str, str]
    ) -> PbxRecord: ...
    async def all(self) -> list[PbxRecord]: ...
    async def get(self, name: str) -> PbxRecord: ...
    async def secrets(self, name: str) -> dict[str, str]: ...
    async def update_config(self, name: str, config: dict[str, Any]) -> None: ...
    async def replace_secrets(self, name: str, values: dict[str, str]) -> None: ...
    async def set_enabled(self, name: str, enabled: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class AsteriskSettings:
    host: str = ""
    port: int = 5038
    username: str = ""
    secret: str = ""
    trunks: tuple[str, ...] = ()
    direction_variable: str = "CALLBRIDGE_DIRECTION"
    agent: bool = False
    # Where MixMonitor writes, for a hub on the PBX's host (embedded AMI link): the hub reads
    # recordings from here. Empty: the hub does not fetch this PBX's recordings.
    recordings_dir: str = ""

    def validate(self) -> tuple[dict[str, Any], dict[str, str]]:
        trunks = [t.strip() for t in self.trunks if t.strip()]
        for pattern in trunks:
            if len(pattern) > 100 or not fnmatch.translate(pattern):
                raise InvalidInput(f"trunk pattern {pattern!r} is not valid")
        if self.direction_variable and not _VARIABLE.match(self.direction_variable):
            raise InvalidInput("the direction variable must be a dialplan variable name")
        recordings_dir = self.recordings_dir.strip()
        if recordings_dir and (
            not recordings_dir.startswith("/") or len(recordings_dir) > 500 or "\0" in recordings_dir
        ):
            raise InvalidInput(
                "the recordings directory must be an absolute path, e.g. /var/spool/asterisk/monitor"
            )
        config: dict[str, Any] = {
            "trunks": trunks,
            "direction_variable": self.direction_variable,
            "agent": self.agent,
            "recordings_dir": recordings_dir,
        }
        if self.agent:
            return config, {}
        if not self.host or not _HOST.match(self.host):
            raise InvalidInput("give the AMI host (--host), e.g. 127.0.0.1 or pbx.example.com")
        if not 1 <= self.port <= 65535:
            raise InvalidInput("the AMI port must be between 1 and 65535")
        if not self.username:
            raise InvalidInput("give the AMI user name (--username) from manager.conf")
        if not self.secret:
            raise InvalidInput("give the AMI secret (--secret) from manager.conf")
        config.update(host=self.host, port=self.port, username=self.username)
        return config, {"secret": self.secret}


@dataclass(frozen=True, slots=True)
class YeastarSettings:
    base_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    webhook_secret: str = ""
    events: str = "webhook"
    # The PBX's own time zone: its CDRs give their start in local time.
    timezone: str = "UTC"
    # The PBX's queues, number → name: a call_path naming one of these passed a queue.
    queues: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> tuple[dict[str, Any], dict[str, str]]:
        parts = urlsplit(self.base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput("the base URL must look like https://yourpbx.ras.yeastar.com")
        if not self.client_id or not self.client_secret:
            raise InvalidInput("give the OpenAPI client id and client secret from the PBX's API settings")
        if self.events not in ("webhook", "websocket"):
            raise InvalidInput("events must be 'webhook' or 'websocket'")
        if self.events == "webhook" and not self.webhook_secret:
            raise InvalidInput(
                "webhook events need the webhook secret (--webhook-secret) to check signatures"
            )
        if not _known_timezone(self.timezone):
            raise InvalidInput(f"unknown time zone {self.timezone!r}: give an IANA name like Europe/Berlin")
        config: dict[str, Any] = {
            "base_url": self.base_url.strip().rstrip("/"),
            "client_id": self.client_id,
            "events": self.events,
            "timezone": self.timezone,
            "queues": validate_queue_numbers(self.queues),
        }
        secrets = {"client_secret": self.client_secret}
        if self.webhook_secret:
            secrets["webhook_secret"] = self.webhook_secret
        return config, secrets


async def add_pbx(
    store: PbxStore, name: str, kind: PbxKind, settings: AsteriskSettings | YeastarSettings
) -> PbxRecord:
    name = validate_pbx_name(name)
    if kind is PbxKind.ASTERISK and not isinstance(settings, AsteriskSettings):
        raise InvalidInput("Asterisk settings expected")
    if kind is PbxKind.YEASTAR and not isinstance(settings, YeastarSettings):
        raise InvalidInput("Yeastar settings expected")
    config, secrets = settings.validate()
    return await store.add(name, kind, config, secrets)


# Settings keys that an edit rebuilds; any other key of a PBX's config (the agent's guard
# settings, for one) is kept as it is.
_ASTERISK_KEYS = frozenset(
    {"host", "port", "username", "trunks", "direction_variable", "agent", "recordings_dir"}
)
_YEASTAR_KEYS = frozenset({"base_url", "client_id", "events", "timezone", "queues"})


@dataclass(frozen=True, slots=True)
class PbxChanges:
    """What an edit changes. ``None`` keeps a setting; a secret is replaced only when given
    (a form re-enters a secret only to change it)."""

    host: str | None = None
    port: int | None = None
    username: str | None = None
    secret: str | None = None
    trunks: tuple[str, ...] | None = None
    direction_variable: str | None = None
    agent: bool | None = None
    recordings_dir: str | None = None
    base_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    webhook_secret: str | None = None
    events: str | None = None
    timezone: str | None = None
    queues: Mapping[str, str] | None = None
    enabled: bool | None = None

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


async def edit_pbx(store: PbxStore, name: str, changes: PbxChanges) -> PbxRecord:
    """Change a PBX's settings (checked as when it was added) and whether it is enabled."""
    record = await store.get(name)
    stored = await store.secrets(name)
    given = changes.given()
    config = record.config
    settings: AsteriskSettings | YeastarSettings
    if record.kind is PbxKind.ASTERISK:
        unknown = set(given) & {
            "base_url",
            "client_id",
            "client_secret",
            "webhook_secret",
            "events",
            "timezone",
            "queues",
        }
        settings = AsteriskSettings(
            host=given.get("host", config.get("host", "")),
            port=given.get("port", config.get("port", 5038)),
            username=given.get("username", config.get("username", "")),
            secret=given.get("secret") or stored.get("secret", ""),
            trunks=given.get("trunks", tuple(config.get("trunks", ()))),
            direction_variable=given.get(
                "direction_variable", config.get("direction_variable", "CALLBRIDGE_DIRECTION")
            ),
            agent=given.get("agent", bool(config.get("agent"))),
            recordings_dir=given.get("recordings_dir", str(config.get("recordings_dir") or "")),
        )
        keys = _ASTERISK_KEYS
    else:
        unknown = set(given) & {
            "host",
            "port",
            "username",
            "secret",
            "trunks",
            "direction_variable",
            "agent",
            "recordings_dir",
        }
        settings = YeastarSettings(
            base_url=given.get("base_url", config.get("base_url", "")),
            client_id=given.get("client_id", config.get("client_id", "")),
            client_secret=given.get("client_secret") or stored.get("client_secret", ""),
            webhook_secret=given.get("webhook_secret") or stored.get("webhook_secret", ""),
            events=given.get("events", config.get("events", "webhook")),
            # Kept unless given: an edit of another setting does not reset them.
            timezone=given.get("timezone", str(config.get("timezone") or "UTC")),
            queues=given.get("queues", dict(yeastar_queues(config))),
        )
        keys = _YEASTAR_KEYS
    if unknown:
        raise InvalidInput(f"{', '.join(sorted(unknown))} do not apply to a {record.kind.value} PBX")
    new_config, new_secrets = settings.validate()
    kept = {k: v for k, v in config.items() if k not in keys}
    await store.update_config(name, {**kept, **new_config})
    await store.replace_secrets(name, new_secrets)
    if changes.enabled is not None:
        await store.set_enabled(name, changes.enabled)
    return await store.get(name)


def webhook_url(public_url: str, record: PbxRecord) -> str:
    base = public_url.rstrip("/") if public_url else "http://<this hub>"
    return f"{base}/webhooks/yeastar/{record.webhook_key}"
