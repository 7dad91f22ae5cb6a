"""Recordings: a call's audio, what state it is in, and the rules for serving parts of it.

A recording starts ``pending`` when a PBX says a call was recorded (``RecordingAvailable``,
carrying the PBX's own file name); the hub fetches the file and it becomes ``ready`` (stored,
with size, checksum and duration) or ``failed`` (with the reason). Retention rules purge a
stored recording's file (``purged``, the reason kept) unless it is under legal hold.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from callbridge.domain.errors import CallbridgeError, InvalidInput


class RecordingStatus(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    PURGED = "purged"


@dataclass(frozen=True, slots=True)
class Recording:
    id: int
    call_id: int
    pbx: str
    reference: str  # the PBX's name for the file (Yeastar file name, MixMonitor path)
    status: RecordingStatus
    reason: str
    storage_key: str
    size_bytes: int | None
    duration_seconds: float | None
    content_type: str
    sha256: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    held: bool = False
    held_by: str = ""
    held_at: datetime | None = None
    via_agent: bool = False  # uploaded by the PBX's agent
    # After a purge: the PBX's copy ("" not asked, "waiting", "deleted", "not_found", "refused").
    pbx_copy: str = ""
    pbx_copy_detail: str = ""
    pbx_copy_at: datetime | None = None


class RangeNotSatisfiable(CallbridgeError):
    """A Range header asks for bytes the file does not have (HTTP 416)."""

    code = "range_not_satisfiable"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class RecordingNotReady(CallbridgeError):
    """The fetch should be tried again later (the PBX is away, the file is not there yet)."""

    code = "recording_not_ready"


class RecordingUnavailable(CallbridgeError):
    """The recording can never be fetched as it is named (outside the allowed directory, …)."""

    code = "recording_unavailable"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte of a single-range ``Range`` header for a file of
    ``size`` bytes; ``None`` when the whole file is wanted (no header, or one we ignore as
    RFC 9110 allows: another unit, several ranges, a malformed value).

    Raises :class:`RangeNotSatisfiable` for a well-formed range that starts past the end."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not spec or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
        return None
    if first_s == "":
        if last_s == "":
            return None
        suffix = int(last_s)  # the last N bytes
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"the range {spec} is empty for a file of {size} bytes", size)
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # invalid: ignored, the whole file is sent
    if first >= size:
        raise RangeNotSatisfiable(f"the range starts at byte {first}; the file has {size} bytes", size)
    last = int(last_s) if last_s else size - 1
    return first, min(last, size - 1)


_CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".oga": "audio/ogg",
    ".gsm": "audio/x-gsm",
    ".m4a": "audio/mp4",
    ".webm": "audio/webm",
}


def content_type_for(name: str) -> str:
    """The audio MIME type for a recording's file name (by its extension)."""
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot >= 0 else ""
    return _CONTENT_TYPES.get(ext, "application/octet-stream")


def retry_delay(attempts: int, *, base: float, cap: float) -> float:
    """Seconds to wait before fetch attempt number ``attempts + 1``: doubling, capped."""
    return float(min(cap, base * (2 ** max(0, min(attempts - 1, 30)))))


# -- shares -------------------------------------------------------------------------------------------

SHARE_DEFAULT_DAYS = 7
SHARE_MAX_DAYS = 90


@dataclass(frozen=True, slots=True)
class SharePlay:
    at: datetime
    address: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class Share:
    id: int
    recording_id: int
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    plays: tuple[SharePlay, ...] = ()

    def usable(self, at: datetime) -> bool:
        """Whether the link still plays at ``at`` (neither revoked nor expired)."""
        return self.revoked_at is None and at < self.expires_at


class ShareGone(CallbridgeError):
    """A shared link that was revoked, has expired, or never existed (the page does not say which)."""

    code = "share_gone"


# -- comments -------------------------------------------------------------------------------------

COMMENT_MAX_CHARS = 2000
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9._@-]{0,63})")


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    call_id: int
    author: str
    text: str
    at_seconds: float | None
    created_at: datetime


def mentions(text: str) -> list[str]:
    """The user names ``@mentioned`` in ``text``, in order, each once (a trailing ``.`` or ``-``
    ends the sentence, not the name)."""
    seen: list[str] = []
    for match in _MENTION.finditer(text):
        name = match.group(1).rstrip("._@-")
        if name and name not in seen:
            seen.append(name)
    return seen


# -- retention ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Recordings of calls older than ``older_than_days`` are purged; an empty ``direction``,
    ``tag`` or ``pbx`` matches every call, a set one only the calls that have it."""

    id: int
    older_than_days: int
    direction: str = ""
    tag: str = ""
    pbx: str = ""

    def cutoff(self, at: datetime) -> datetime:
        return at - timedelta(days=self.older_than_days)

    def describe(self) -> str:
        parts = [f"older than {self.older_than_days} days"]
        if self.direction:
            parts.append(f"direction {self.direction}")
        if self.tag:
            parts.append(f"tag {self.tag}")
        if self.pbx:
            parts.append(f"phone system {self.pbx}")
        return f"retention rule {self.id}: " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class PurgeCandidate:
    recording_id: int
    call_id: int
    pbx: str
    storage_key: str
    started_at: datetime
    reason: str
    via_agent: bool = False  # uploaded by the PBX's agent: ask it to delete the PBX's copy
    reference: str = ""


class UploadOffsetMismatch(CallbridgeError):
    """An agent sent a chunk for another offset than the hub's partial file has (HTTP 409):
    it asks again where to go on."""

    code = "offset_mismatch"

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class UploadChecksumMismatch(CallbridgeError):
    """A chunk or a whole upload does not match its SHA-256 or size (HTTP 422); nothing of it
    is kept as a recording."""

    code = "checksum_mismatch"


class UploadTooLarge(CallbridgeError):
    """A recording over the hub's size cap (HTTP 413)."""

    code = "recording_too_large"


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "some/prefix" (no leading or trailing slash)


def parse_recordings_url(url: str) -> S3Location | None:
    """``""`` → ``None`` (files under the data dir); ``s3://bucket/prefix`` → its location."""
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidInput("the recordings URL must be empty or s3://bucket/prefix")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise InvalidInput("the recordings URL names a bucket only; the keys are separate settings")
    prefix = parts.path.strip("/")
    if prefix and any(p in ("", ".", "..") for p in prefix.split("/")):
        raise InvalidInput("the recordings URL's prefix must be plain path segments")
    return S3Location(parts.netloc, prefix)
