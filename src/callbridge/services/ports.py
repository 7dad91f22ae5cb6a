"""The seams between use cases and the outside world. PBX drivers implement these.

Imports point inward: ``pbx/`` implements these protocols, ``services/`` calls them, and
neither side sees the other's vocabulary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from callbridge.domain.events import Event

EventSink = Callable[[Event], Awaitable[None]]
"""Where a driver puts each normalized event, in order. It must not block for long."""


@dataclass(frozen=True, slots=True)
class Originate:
    """Click-to-call: ring ``extension`` first; when it answers, dial ``number``."""

    extension: str
    number: str
    caller_id: str = ""
    auto_answer: bool = False
    timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """What the settings page and ``callbridge pbx list`` show about a PBX link."""

    connected: bool
    detail: str = ""
    last_event_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class CallControl(Protocol):
    """Commands a user can give a PBX. Failures raise ``PbxRejected``/``PbxUnavailable``
    (from :mod:`callbridge.domain.errors`) with a message a user understands."""

    async def originate(self, request: Originate) -> str:
        """Start the call; returns the PBX's id for it."""
        ...

    async def hangup(self, call_id: str) -> None: ...

    async def redirect(self, call_id: str, destination: str) -> None:
        """Blind transfer of the call's external party to ``destination``."""
        ...


@runtime_checkable
class PbxLink(CallControl, Protocol):
    """A long-lived link to one PBX that feeds normalized events to a sink."""

    name: str

    def status(self) -> LinkStatus: ...

    async def run(self) -> None:
        """Connect, reconnect with capped backoff, forward events; returns only when cancelled
        or on an error no retry can fix (wrong credentials), which it raises."""
        ...


@runtime_checkable
class Supervision(Protocol):
    """What a supervisor may do on PBXs that allow it (Asterisk): pause a queue member with a
    reason, and join a live call (``mode``: listen | whisper | barge) from their own phone."""

    async def queue_pause(self, queue: str, extension: str, paused: bool, reason: str) -> None: ...

    async def spy(self, call_id: str, extension: str, mode: str) -> None: ...
