"""Recordings: a call's audio, what state it is in, and the rules for serving parts of it.

A recording starts ``pending`` when a PBX says a call was recorded (``RecordingAvailable``,
carrying the PBX's own file name); the hub fetches the file and it becomes ``ready`` (stored,
with size, checksum and duration) or ``failed`` (with the reason). ``purged`` is for retention,
which is not built yet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from callbridge.domain.errors import CallbridgeError


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
