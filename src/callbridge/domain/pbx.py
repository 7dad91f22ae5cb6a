"""A configured PBX, as the hub knows it (no secrets here)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from callbridge.domain.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class PbxKind(StrEnum):
    ASTERISK = "asterisk"
    YEASTAR = "yeastar"


@dataclass(frozen=True, slots=True)
class PbxRecord:
    id: int
    name: str
    kind: PbxKind
    config: dict[str, Any] = field(default_factory=dict)
    webhook_key: str = ""
    enabled: bool = True
    created_at: datetime | None = None
    last_event_at: datetime | None = None
    link_up: bool = False
    link_detail: str = ""
    link_checked_at: datetime | None = None

    @property
    def allows_supervision(self) -> bool:
        """Whether supervisors may pause its queue members and listen / whisper / barge on its
        calls: an Asterisk the hub reaches over AMI itself (not through an agent; not Yeastar)."""
        return self.kind is PbxKind.ASTERISK and not self.config.get("agent")


def validate_pbx_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise InvalidInput("a PBX name is 1 to 64 letters, digits, _ or - and starts with a letter or digit")
    return name
