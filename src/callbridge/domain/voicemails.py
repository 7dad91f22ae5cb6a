"""Voicemail: a message a caller left in a PBX mailbox, its audio, and whether it was heard.

A voicemail arrives with its metadata (mailbox, caller, when, how long); its audio follows
(``pending`` with the reason until the agent has uploaded it, then ``ready``; ``failed`` with
the reason when it will never come). Asterisk's app_voicemail writes one ``msgNNNN.txt``
(an INI-like ``[message]`` section) beside each ``msgNNNN.wav``: :func:`parse_message_file`
reads it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from callbridge.domain.errors import InvalidInput
from callbridge.domain.transcripts import Segment, TranscriptStatus


class AudioStatus(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class VoicemailTranscript:
    """A voicemail's transcript, made on the hub by the recordings' transcriber."""

    status: TranscriptStatus
    language: str
    segments: tuple[Segment, ...]
    reason: str = ""

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


@dataclass(frozen=True, slots=True)
class Voicemail:
    id: int
    pbx: str
    mailbox: str  # "7001@default"
    reference: str  # the PBX's name for the message (the spool path of its .txt file)
    caller_number: str
    caller_name: str
    contact_id: int | None
    received_at: datetime
    duration_seconds: int
    heard: bool
    call_id: int | None  # the hub's call the message was left on, when known
    audio_status: AudioStatus
    audio_reason: str
    storage_key: str
    size_bytes: int | None
    sha256: str
    content_type: str
    created_at: datetime
    transcript: VoicemailTranscript | None = None  # where transcription is on

    @property
    def mailbox_number(self) -> str:
        return mailbox_number(self.mailbox)


def mailbox_number(mailbox: str) -> str:
    """``7001@default`` → ``7001`` (the extension the mailbox belongs to)."""
    return mailbox.partition("@")[0].strip()


@dataclass(frozen=True, slots=True)
class MessageFile:
    """What app_voicemail's ``msgNNNN.txt`` says about one message."""

    caller_number: str
    caller_name: str
    received_at: datetime
    duration_seconds: int
    linked_id: str  # the call's Linkedid (Asterisk 16+ writes ``msg_id``; some add ``linkedid``)


def parse_callerid(value: str) -> tuple[str, str]:
    """``"Ada Lovelace" <+14155550100>`` → (number, name); ``+1415…`` → (number, "")."""
    value = value.strip()
    if value.endswith(">") and "<" in value:
        name, _, rest = value.rpartition("<")
        return rest[:-1].strip(), name.strip().strip('"').strip()
    if value.lower() == "unknown":
        return "", ""
    return value, ""


def parse_message_file(text: str) -> MessageFile:
    """Read a ``msgNNNN.txt``; raises :class:`InvalidInput` when it has no usable ``origtime``."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith((";", "#", "[")):
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    try:
        origtime = int(values.get("origtime", ""))
        received = datetime.fromtimestamp(origtime, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidInput("the message file has no valid origtime") from exc
    try:
        duration = max(0, int(values.get("duration", "0") or 0))
    except ValueError:
        duration = 0
    number, name = parse_callerid(values.get("callerid", ""))
    return MessageFile(
        caller_number=number[:64],
        caller_name=name[:128],
        received_at=received,
        duration_seconds=duration,
        linked_id=values.get("linkedid", "")[:128],
    )
