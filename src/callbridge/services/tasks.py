"""Follow-up tasks: made and closed by calls as they are ingested, changed by users.

In ingest's unit of work (:meth:`FollowUps.on_call`):

- a missed inbound call (see :func:`~callbridge.domain.tasks.wants_callback`) adds itself to the
  open callback task for its number, else opens one, assigned by rule: the user of the extension
  that rang (when exactly one user's phone rang), else the contact's owner (or its company's),
  else the callback team's member whose turn it is (round robin among the members signed in,
  else among all), else the first user whose phone rang, else nobody (managers see it);
- an answered call with a number that has open tasks closes those whose assignee took part in
  it (or every one of them, with ``close_by_anyone``), linking the call.

Users change tasks through :meth:`FollowUps.update` (status, assignee, snooze, comment) with the
rights checked here: an agent changes only their own tasks; managers and admins any.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from callbridge.bus import Payload
from callbridge.domain.directory import Contact
from callbridge.domain.errors import Forbidden, InvalidInput, NotFound
from callbridge.domain.events import Disposition
from callbridge.domain.numbers import format_for_region
from callbridge.domain.tasks import Task, TaskKind, TaskStatus, check_comment, wants_callback
from callbridge.domain.users import User
from callbridge.services.calllog import Ingested

log = logging.getLogger(__name__)

TASK_MESSAGE = "task"


@dataclass(frozen=True, slots=True)
class FollowUpRules:
    """The settings follow-up runs by (``CALLBRIDGE_FOLLOWUP_*``)."""

    # A missed call that rang for less than this is a short abandon: no task.
    min_ring_seconds: int = 5
    # An answered call by anyone with the number closes its tasks (not only the assignee's).
    close_by_anyone: bool = False
    # The team whose members share callbacks nobody else is for; empty: the first team.
    team: str = ""
    time_zone: str = "UTC"
    region: str = "US"


class TaskRows(Protocol):
    async def get(self, task_id: int, today: datetime | None = None) -> Task | None: ...

    async def callback_for(self, number: str, call_id: int) -> tuple[int | None, bool]: ...

    async def user_name(self, user_id: int) -> str: ...

    async def open_ids_for_number(self, number: str) -> list[tuple[int, int | None]]: ...

    async def create(
        self,
        kind: TaskKind,
        number: str,
        contact_id: int | None,
        assignee_id: int | None,
        due_at: datetime,
        call_id: int | None,
    ) -> int: ...

    async def link_call(self, task_id: int, call_id: int) -> None: ...

    async def close(self, task_id: int, call_id: int | None, user_id: int | None) -> None: ...

    async def assign(self, task_id: int, user_id: int | None) -> None: ...

    async def snooze(self, task_id: int, until: datetime) -> None: ...

    async def add_comment(self, task_id: int, user_id: int, body: str) -> None: ...


class TeamTurns(Protocol):
    async def find(self, name: str) -> int | None: ...

    async def first(self) -> int | None: ...

    async def take_turn(self, team_id: int) -> int | None: ...


class ContactReads(Protocol):
    async def find(self, contact_id: int) -> Contact | None: ...


@dataclass(frozen=True, slots=True)
class FollowUpStore:
    tasks: TaskRows
    teams: TeamTurns
    contacts: ContactReads


def start_of_today(zone: str, at: datetime | None = None) -> datetime:
    local = (at or datetime.now(UTC)).astimezone(ZoneInfo(zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def task_dict(task: Task) -> dict[str, Any]:
    """A task as the API shows it (``GET /api/v1/tasks``; the names are a contract)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    contact = None
    if task.contact_id is not None:
        contact = {"id": task.contact_id, "name": task.contact_name, "company": task.company_name or None}
    return {
        "id": task.id,
        "kind": task.kind.value,
        "number": task.number,
        "contact": contact,
        "assignee": task.assignee or None,
        "status": task.status.value,
        "due_at": iso(task.due_at),
        "created_at": iso(task.created_at),
        "closed_at": iso(task.closed_at),
        "closed_by_call_id": task.closed_by_call_id,
        "calls": list(task.calls),
    }


def task_title(task: Task, region: str) -> str:
    """ "call back +1 415-555-0100, Acme, missed 2× today" — what the desk lists."""
    shown = format_for_region(task.number, region) if task.number else "unknown number"
    who = ", ".join(x for x in dict.fromkeys([task.contact_name, task.company_name]) if x)
    verb = {
        TaskKind.CALLBACK: "call back",
        TaskKind.VOICEMAIL: "voicemail from",
        TaskKind.FOLLOW_UP: "follow up",
    }
    title = f"{verb[task.kind]} {shown}" + (f", {who}" if who else "")
    if task.kind is TaskKind.CALLBACK and task.calls_today:
        title += f", missed {task.calls_today}× today"
    return title


class FollowUps:
    def __init__(self, rules: FollowUpRules) -> None:
        self.rules = rules

    def today(self) -> datetime:
        return start_of_today(self.rules.time_zone)

    def message(self, task: Task, users: Sequence[int], change: str) -> tuple[str, Payload]:
        """The desk message for a task that changed, addressed to ``users``."""
        from callbridge.services.live import DESK_TOPIC

        return (
            DESK_TOPIC,
            {
                "users": sorted({u for u in users}),
                "msg": {
                    "type": TASK_MESSAGE,
                    "change": change,
                    "task": task_dict(task),
                    "title": task_title(task, self.rules.region),
                    "sent_at": datetime.now(UTC).isoformat(),
                },
            },
        )

    # -- from ingest ---------------------------------------------------------------------------

    async def on_call(self, changed: Ingested, store: FollowUpStore) -> list[tuple[str, Payload]]:
        s = changed.summary
        if s.disposition is None or not s.external_number or not changed.id:
            return []
        if wants_callback(
            s.direction, s.disposition, s.external_number, s.ring_seconds, self.rules.min_ring_seconds
        ):
            return await self._missed(changed, store)
        if s.disposition is Disposition.ANSWERED and s.answered_at is not None:
            return await self._reached(changed, store)
        return []

    async def _missed(self, changed: Ingested, store: FollowUpStore) -> list[tuple[str, Payload]]:
        s = changed.summary
        found, linked = await store.tasks.callback_for(s.external_number, changed.id)
        if linked:
            return []  # the end re-reported: this call is in its task already
        if found is not None:
            await store.tasks.link_call(found, changed.id)
            task = await store.tasks.get(found, self.today())
            if task is None or task.assignee_id is None:
                return []
            return [self.message(task, [task.assignee_id], "updated")]
        # A new task: built from what ingest knows, not read back (the busiest path: a few
        # statements per missed call, see bench/followup.py).
        assignee = await self._assignee(changed, store)
        due = s.ended_at or s.started_at or datetime.now(UTC)
        task_id = await store.tasks.create(
            TaskKind.CALLBACK, s.external_number, changed.link.contact_id, assignee, due, changed.id
        )
        log.info("callback task %s for call %s/%s", task_id, s.pbx, s.call_id)
        if assignee is None:
            return []
        started = s.started_at or due
        task = Task(
            id=task_id,
            kind=TaskKind.CALLBACK,
            number=s.external_number,
            contact_id=changed.link.contact_id,
            contact_name=changed.contact_name if changed.link.contact_id is not None else "",
            company_name=changed.company_name,
            assignee_id=assignee,
            assignee=await store.tasks.user_name(assignee),
            status=TaskStatus.OPEN,
            due_at=due,
            created_at=datetime.now(UTC),
            closed_at=None,
            closed_by_call_id=None,
            calls=(changed.id,),
            calls_today=1 if started >= self.today() else 0,
        )
        return [self.message(task, [assignee], "created")]

    async def on_voicemail(
        self,
        number: str,
        contact_id: int | None,
        received_at: datetime,
        mailbox_user: int | None,
        store: FollowUpStore,
    ) -> list[tuple[str, Payload]]:
        """A new voicemail from ``number`` (E.164; "" for an unknown or internal caller: no task)
        leaves a voicemail task: for the mailbox's user, else by the callbacks' rules (the
        contact's owner, the team). It closes by itself like a callback task."""
        if not number:
            return []
        assignee = mailbox_user
        if assignee is None:
            assignee = await self._owner_or_team(contact_id, None, store)
        kind = TaskKind.VOICEMAIL
        task_id = await store.tasks.create(kind, number, contact_id, assignee, received_at, None)
        log.info("voicemail task %s for %s", task_id, number)
        task = await store.tasks.get(task_id, self.today())
        if task is None or assignee is None:
            return []
        return [self.message(task, [assignee], "created")]

    async def _owner_or_team(
        self, contact_id: int | None, company_id: int | None, store: FollowUpStore
    ) -> int | None:
        """The contact's owner (or its company's), else the team's next member."""
        for owner_of in (contact_id, company_id):
            if owner_of is None:
                continue
            contact = await store.contacts.find(owner_of)
            if contact is not None and contact.owner_id is not None:
                return contact.owner_id
            if contact is not None and company_id is None and contact.company_id is not None:
                company = await store.contacts.find(contact.company_id)
                if company is not None and company.owner_id is not None:
                    return company.owner_id
        team = await (store.teams.find(self.rules.team) if self.rules.team else store.teams.first())
        if team is not None:
            return await store.teams.take_turn(team)
        return None

    async def _assignee(self, changed: Ingested, store: FollowUpStore) -> int | None:
        rung = sorted(changed.link.user_ids)
        if len(rung) == 1:
            return rung[0]
        for contact_id in (changed.link.contact_id, changed.link.company_id):
            if contact_id is None:
                continue
            contact = await store.contacts.find(contact_id)
            if contact is not None and contact.owner_id is not None:
                return contact.owner_id
        team = await (store.teams.find(self.rules.team) if self.rules.team else store.teams.first())
        if team is not None:
            chosen = await store.teams.take_turn(team)
            if chosen is not None:
                return chosen
        return rung[0] if rung else None

    async def _reached(self, changed: Ingested, store: FollowUpStore) -> list[tuple[str, Payload]]:
        s = changed.summary
        link = changed.link
        took_part = {u for u in (link.answered_by_user_id, link.placed_by_user_id, *link.user_ids) if u}
        out: list[tuple[str, Payload]] = []
        for task_id, assignee in await store.tasks.open_ids_for_number(s.external_number):
            if not self.rules.close_by_anyone and (assignee is None or assignee not in took_part):
                continue
            task = await store.tasks.get(task_id)
            if task is None or changed.id in task.calls:
                continue  # the call the task was made from does not close it
            await store.tasks.close(task_id, changed.id, None)
            closed = await store.tasks.get(task_id, self.today())
            log.info("task %s closed by call %s/%s", task_id, s.pbx, s.call_id)
            if closed is not None and closed.assignee_id is not None:
                out.append(self.message(closed, [closed.assignee_id], "closed"))
        return out

    # -- from users ----------------------------------------------------------------------------

    async def visible(self, task_id: int, user: User, store: FollowUpStore) -> Task:
        """The task, when ``user`` may see it: an agent sees their own tasks only."""
        task = await store.tasks.get(task_id, self.today())
        if task is None or (not user.sees_all_calls and task.assignee_id != user.id):
            raise NotFound(f"no task {task_id}")
        return task

    async def create_follow_up(
        self,
        number: str,
        contact_id: int | None,
        call_id: int,
        assignee_id: int,
        due_at: datetime | None,
        store: FollowUpStore,
    ) -> Task:
        if not number:
            raise InvalidInput("that call has no outside number to follow up")
        task_id = await store.tasks.create(
            TaskKind.FOLLOW_UP, number, contact_id, assignee_id, due_at or datetime.now(UTC), call_id
        )
        task = await store.tasks.get(task_id, self.today())
        assert task is not None
        return task

    async def update(
        self,
        task_id: int,
        user: User,
        store: FollowUpStore,
        *,
        status: TaskStatus | None = None,
        assignee_id: int | None = None,
        snooze_until: datetime | None = None,
        comment: str | None = None,
    ) -> tuple[Task, list[int]]:
        """Apply a user's change; returns the task and the users to tell (old and new assignee)."""
        task = await store.tasks.get(task_id, self.today())
        if task is None:
            raise NotFound(f"no task {task_id}")
        if not user.sees_all_calls and task.assignee_id != user.id:
            raise Forbidden(
                f"task {task_id} is {task.assignee or 'nobody'}'s; only they or a manager can change it"
            )
        task.check_open()
        tell = [u for u in (task.assignee_id,) if u is not None]
        if comment is not None:
            await store.tasks.add_comment(task_id, user.id, check_comment(comment))
        if snooze_until is not None:
            if snooze_until.tzinfo is None:
                raise InvalidInput("snooze_until needs a time zone (e.g. 2026-12-06T14:00:00Z)")
            if snooze_until <= datetime.now(UTC):
                raise InvalidInput("snooze_until is in the past; snooze until a later time")
            if snooze_until > datetime.now(UTC) + timedelta(days=366):
                raise InvalidInput("snooze_until is more than a year away")
            await store.tasks.snooze(task_id, snooze_until)
        if assignee_id is not None and assignee_id != task.assignee_id:
            await store.tasks.assign(task_id, assignee_id)
            tell.append(assignee_id)
        if status is TaskStatus.DONE:
            await store.tasks.close(task_id, None, user.id)
        found = await store.tasks.get(task_id, self.today())
        assert found is not None
        return found, tell
