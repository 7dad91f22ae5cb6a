"""Transcripts of recordings, made on the hub, and the rules that choose which calls get one.

A transcript is ``ready`` (language, text and timed segments) or ``failed`` (with the reason: an
audio file the transcriber cannot read is not tried again).
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field


class TranscriptStatus(enum.StrEnum):
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Segment:
    start: float  # seconds from the recording's start
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Transcript:
    id: int
    recording_id: int
    call_id: int
    status: TranscriptStatus
    language: str
    text: str
    segments: tuple[Segment, ...]
    reason: str = ""
    summary: str | None = None


def _items(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True, slots=True)
class TranscribeRules:
    """Which calls are transcribed: each list left empty matches every call; a call must match
    all three. ``numbers`` are shell-style patterns (``+4930*``, ``1002``) matched against the
    call's external, from and to numbers."""

    numbers: tuple[str, ...] = field(default=())
    directions: tuple[str, ...] = field(default=())
    pbxes: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, numbers: str = "", directions: str = "", pbxes: str = "") -> TranscribeRules:
        return cls(_items(numbers), tuple(d.lower() for d in _items(directions)), _items(pbxes))

    def matches(self, *, direction: str, pbx: str, numbers: Iterable[str]) -> bool:
        if self.directions and direction not in self.directions:
            return False
        if self.pbxes and pbx not in self.pbxes:
            return False
        if self.numbers:
            present = [n for n in numbers if n]
            return any(fnmatch.fnmatchcase(n, p) for n in present for p in self.numbers)
        return True
