"""Follow-up tasks: the calls somebody owes a customer.

A missed inbound call (nobody answered, and the caller waited longer than a short abandon)
leaves a *callback* task; a user can add a *follow_up* task from any call they see. Repeated
missed calls from one number fold into the one open task for that number. A task closes by
itself when its assignee (or anyone, by setting) reaches the number: an answered call with that
party, which the task links to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from callbridge.domain.errors import Conflict, InvalidInput
from callbridge.domain.events import Direction, Disposition

MAX_COMMENT = 2000


class TaskKind(StrEnum):
    CALLBACK = "callback"
    VOICEMAIL = "voicemail"
    FOLLOW_UP = "follow_up"


class TaskStatus(StrEnum):
    OPEN = "open"
    DONE = "done"


# The outcomes of a call nobody answered (busy and voicemail included: nobody spoke to the caller).
UNANSWERED = frozenset({Disposition.MISSED, Disposition.ABANDONED, Disposition.BUSY, Disposition.VOICEMAIL})


class TaskClosed(Conflict):
    """A change to a task that is done already."""

    code = "task_closed"


def wants_callback(
    direction: Direction | None,
    disposition: Disposition | None,
    external_number: str,
    ring_seconds: int,
    min_ring_seconds: int,
) -> bool:
    """Whether an ended call leaves a callback task: an inbound call from an outside number that
    nobody answered, where the caller waited at least ``min_ring_seconds`` (a shorter one is a
    short abandon: a misdial or a caller who changed their mind)."""
    return (
        direction is Direction.INBOUND
        and disposition in UNANSWERED
        and bool(external_number)
        and ring_seconds >= min_ring_seconds
    )


def next_in_turn(members: Sequence[int], last: int | None) -> int | None:
    """Round robin: the member after ``last`` (by id, wrapping round); the first when ``last``
    is none or no longer a member. ``None`` for nobody."""
    ordered = sorted(set(members))
    if not ordered:
        return None
    if last is not None:
        for member in ordered:
            if member > last:
                return member
    return ordered[0]


def check_comment(text: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidInput("the comment is empty; write something or leave it out")
    if len(text) > MAX_COMMENT:
        raise InvalidInput(f"the comment is longer than {MAX_COMMENT} characters")
    return text


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    kind: TaskKind
    number: str
    contact_id: int | None
    contact_name: str
    company_name: str
    assignee_id: int | None
    assignee: str  # the user name ("" for nobody)
    status: TaskStatus
    due_at: datetime
    created_at: datetime
    closed_at: datetime | None
    closed_by_call_id: int | None
    calls: tuple[int, ...]
    # Calls of the task that started since the start of today (in the hub's zone): "missed N× today".
    calls_today: int = 0

    @property
    def is_open(self) -> bool:
        return self.status is TaskStatus.OPEN

    def check_open(self) -> None:
        if not self.is_open:
            when = self.closed_at.strftime("%Y-%m-%d %H:%M UTC") if self.closed_at else "before"
            raise TaskClosed(f"task {self.id} is done (closed {when}); a closed task cannot be changed")
