"""SQL for follow-up tasks, their calls and comments, and the teams that share callbacks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.connectors import ConnectorKind
from callbridge.domain.errors import InvalidInput
from callbridge.domain.tasks import Task, TaskKind, TaskStatus, next_in_turn
from callbridge.store.calls import calls
from callbridge.store.connectors import enqueue_call_changes
from callbridge.store.directory import contacts, decode_cursor, encode_cursor
from callbridge.store.tables import UtcDateTime, metadata, now, users, web_sessions

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("number", String(64), nullable=False),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True),
    Column("assignee_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("status", String(8), nullable=False),
    # When the call is owed: the missed call's time, or the end of a snooze.
    Column("due_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("updated_at", UtcDateTime, nullable=False, default=now),
    Column("closed_at", UtcDateTime, nullable=True),
    Column("closed_by_call_id", Integer, ForeignKey("calls.id", ondelete="SET NULL"), nullable=True),
    Column("closed_by_user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Index("ix_tasks_status_number", "status", "number"),
    Index("ix_tasks_assignee_id_status", "assignee_id", "status"),
)

task_calls = Table(
    "task_calls",
    metadata,
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False, index=True),
    PrimaryKeyConstraint("task_id", "call_id", name="pk_task_calls"),
)

task_comments = Table(
    "task_comments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, default=now),
)

teams = Table(
    "teams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    # Round robin: the member who got the team's last task.
    Column("last_user_id", Integer, nullable=True),
    Column("created_at", UtcDateTime, nullable=False, default=now),
)

team_members = Table(
    "team_members",
    metadata,
    Column("team_id", Integer, ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    PrimaryKeyConstraint("team_id", "user_id", name="pk_team_members"),
)


@dataclass(frozen=True, slots=True)
class Team:
    id: int
    name: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TaskComment:
    id: int
    user: str
    body: str
    created_at: datetime


_company = contacts.alias("task_company")


class SqlTasks:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- reads ---------------------------------------------------------------------------------

    def _select(self) -> Any:
        return select(
            tasks,
            users.c.name.label("assignee_name"),
            contacts.c.name.label("contact_name"),
            contacts.c.kind.label("contact_kind"),
            _company.c.name.label("company_name"),
        ).select_from(
            tasks.outerjoin(users, users.c.id == tasks.c.assignee_id)
            .outerjoin(contacts, contacts.c.id == tasks.c.contact_id)
            .outerjoin(_company, _company.c.id == contacts.c.company_id)
        )

    async def _build(self, rows: Sequence[Any], today: datetime | None) -> list[Task]:
        ids = [r.id for r in rows]
        linked: dict[int, list[tuple[int, datetime]]] = {i: [] for i in ids}
        if ids:
            stmt = (
                select(task_calls.c.task_id, task_calls.c.call_id, calls.c.started_at)
                .join(calls, calls.c.id == task_calls.c.call_id)
                .where(task_calls.c.task_id.in_(ids))
                .order_by(calls.c.started_at, calls.c.id)
            )
            for r in (await self.session.execute(stmt)).all():
                linked[r.task_id].append((r.call_id, r.started_at))
        out = []
        for r in rows:
            company = r.company_name or (r.contact_name if r.contact_kind == "company" else "")
            found = linked[r.id]
            out.append(
                Task(
                    id=r.id,
                    kind=TaskKind(r.kind),
                    number=r.number,
                    contact_id=r.contact_id,
                    contact_name=r.contact_name or "",
                    company_name=company or "",
                    assignee_id=r.assignee_id,
                    assignee=r.assignee_name or "",
                    status=TaskStatus(r.status),
                    due_at=r.due_at,
                    created_at=r.created_at,
                    closed_at=r.closed_at,
                    closed_by_call_id=r.closed_by_call_id,
                    calls=tuple(c for c, _ in found),
                    calls_today=sum(1 for _, at in found if today is None or at >= today),
                )
            )
        return out

    async def get(self, task_id: int, today: datetime | None = None) -> Task | None:
        rows = (await self.session.execute(self._select().where(tasks.c.id == task_id))).all()
        built = await self._build(rows, today)
        return built[0] if built else None

    async def search(
        self,
        *,
        status: TaskStatus | None,
        assignee_id: int | None,
        any_assignee: bool,
        number: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        today: datetime | None = None,
    ) -> tuple[list[Task], str | None]:
        """Tasks, the most owed first: by due time (overdue before snoozed), then id."""
        stmt = self._select()
        if status is not None:
            stmt = stmt.where(tasks.c.status == status.value)
        if not any_assignee:
            stmt = stmt.where(tasks.c.assignee_id == assignee_id)
        if number is not None:
            stmt = stmt.where(tasks.c.number == number)
        if cursor:
            due_iso, last_id = decode_cursor(cursor, 2)
            try:
                due = datetime.fromisoformat(str(due_iso))
                last = int(last_id)
            except (TypeError, ValueError) as exc:
                raise InvalidInput("the cursor is not valid; start from the first page") from exc
            stmt = stmt.where(or_(tasks.c.due_at > due, and_(tasks.c.due_at == due, tasks.c.id > last)))
        stmt = stmt.order_by(tasks.c.due_at, tasks.c.id).limit(limit + 1)
        rows = (await self.session.execute(stmt)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        found = await self._build(rows, today)
        after = encode_cursor([rows[-1].due_at.isoformat(), rows[-1].id]) if more and rows else None
        return found, after

    async def callback_for(self, number: str, call_id: int) -> tuple[int | None, bool]:
        """In one statement: the open callback task for ``number`` (its id, or ``None``) and
        whether call ``call_id`` is in a task already (its end reported again)."""
        open_id = (
            select(tasks.c.id)
            .where(
                tasks.c.status == TaskStatus.OPEN.value,
                tasks.c.number == number,
                tasks.c.kind == TaskKind.CALLBACK.value,
            )
            .order_by(tasks.c.id)
            .limit(1)
            .scalar_subquery()
        )
        linked = exists().where(task_calls.c.call_id == call_id)
        row = (await self.session.execute(select(open_id.label("open_id"), linked.label("linked")))).one()
        return (int(row.open_id) if row.open_id is not None else None), bool(row.linked)

    async def user_name(self, user_id: int) -> str:
        return str(
            (await self.session.execute(select(users.c.name).where(users.c.id == user_id))).scalar() or ""
        )

    async def open_ids_for_number(self, number: str) -> list[tuple[int, int | None]]:
        """(task id, assignee id) of every open task for ``number``, locked."""
        stmt = (
            select(tasks.c.id, tasks.c.assignee_id)
            .where(tasks.c.status == TaskStatus.OPEN.value, tasks.c.number == number)
            .order_by(tasks.c.id)
            .with_for_update()
        )
        return [(r.id, r.assignee_id) for r in (await self.session.execute(stmt)).all()]

    async def owed(self, number: str) -> list[tuple[int | None, datetime]]:
        """(assignee id, created at) of the open tasks for ``number``: what a pop tells."""
        stmt = (
            select(tasks.c.assignee_id, tasks.c.created_at)
            .where(tasks.c.status == TaskStatus.OPEN.value, tasks.c.number == number)
            .order_by(tasks.c.created_at)
        )
        return [(r.assignee_id, r.created_at) for r in (await self.session.execute(stmt)).all()]

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self,
        kind: TaskKind,
        number: str,
        contact_id: int | None,
        assignee_id: int | None,
        due_at: datetime,
        call_id: int | None,
    ) -> int:
        at = now()
        task_id = int(
            (
                await self.session.execute(
                    insert(tasks)
                    .values(
                        kind=kind.value,
                        number=number,
                        contact_id=contact_id,
                        assignee_id=assignee_id,
                        status=TaskStatus.OPEN.value,
                        due_at=due_at,
                        created_at=at,
                        updated_at=at,
                    )
                    .returning(tasks.c.id)
                )
            ).scalar_one()
        )
        if call_id is not None:
            await self.session.execute(insert(task_calls).values(task_id=task_id, call_id=call_id))
        return task_id

    async def link_call(self, task_id: int, call_id: int) -> None:
        await self.session.execute(insert(task_calls).values(task_id=task_id, call_id=call_id))
        await self.session.execute(update(tasks).where(tasks.c.id == task_id).values(updated_at=now()))

    async def close(self, task_id: int, call_id: int | None, user_id: int | None) -> None:
        result = await self.session.execute(
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.OPEN.value)
            .values(
                status=TaskStatus.DONE.value,
                closed_at=now(),
                closed_by_call_id=call_id,
                closed_by_user_id=user_id,
                updated_at=now(),
            )
        )
        if int(result.rowcount or 0) and await self._kind(task_id) is TaskKind.CALLBACK:  # type: ignore[attr-defined]
            # The missed calls go to Odoo again, in this transaction (the durable outbox): their
            # "Call" activities are marked done there.
            missed = select(task_calls.c.call_id).where(task_calls.c.task_id == task_id)
            await enqueue_call_changes(
                self.session, list((await self.session.execute(missed)).scalars()), kinds=[ConnectorKind.ODOO]
            )

    async def _kind(self, task_id: int) -> TaskKind | None:
        found = (await self.session.execute(select(tasks.c.kind).where(tasks.c.id == task_id))).scalar()
        return TaskKind(found) if found else None

    async def callback_closed(self, call_id: int) -> bool:
        """Whether the callback task this (missed) call is in is done."""
        query = (
            select(tasks.c.status)
            .join(task_calls, task_calls.c.task_id == tasks.c.id)
            .where(task_calls.c.call_id == call_id, tasks.c.kind == TaskKind.CALLBACK.value)
        )
        found = list((await self.session.execute(query)).scalars())
        return bool(found) and all(status == TaskStatus.DONE.value for status in found)

    async def assign(self, task_id: int, user_id: int | None) -> None:
        await self.session.execute(
            update(tasks).where(tasks.c.id == task_id).values(assignee_id=user_id, updated_at=now())
        )

    async def snooze(self, task_id: int, until: datetime) -> None:
        await self.session.execute(
            update(tasks).where(tasks.c.id == task_id).values(due_at=until, updated_at=now())
        )

    async def add_comment(self, task_id: int, user_id: int, body: str) -> None:
        await self.session.execute(
            insert(task_comments).values(task_id=task_id, user_id=user_id, body=body, created_at=now())
        )

    async def comments(self, task_id: int) -> list[TaskComment]:
        stmt = (
            select(task_comments, users.c.name.label("user_name"))
            .select_from(task_comments.outerjoin(users, users.c.id == task_comments.c.user_id))
            .where(task_comments.c.task_id == task_id)
            .order_by(task_comments.c.id)
        )
        return [
            TaskComment(r.id, r.user_name or "", r.body, r.created_at)
            for r in (await self.session.execute(stmt)).all()
        ]


class SqlTeams:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, name: str) -> int:
        exists = (await self.session.execute(select(teams.c.id).where(teams.c.name == name))).scalar()
        if exists is not None:
            raise InvalidInput(f"a team named {name!r} exists already")
        stmt = insert(teams).values(name=name, created_at=now()).returning(teams.c.id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def delete(self, team_id: int) -> bool:
        result = await self.session.execute(delete(teams).where(teams.c.id == team_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def find(self, name: str) -> int | None:
        return (await self.session.execute(select(teams.c.id).where(teams.c.name == name))).scalar()

    async def first(self) -> int | None:
        return (await self.session.execute(select(teams.c.id).order_by(teams.c.id).limit(1))).scalar()

    async def set_members(self, team_id: int, user_ids: Sequence[int]) -> None:
        await self.session.execute(delete(team_members).where(team_members.c.team_id == team_id))
        if user_ids:
            await self.session.execute(
                insert(team_members), [{"team_id": team_id, "user_id": u} for u in sorted(set(user_ids))]
            )

    async def all(self) -> list[Team]:
        rows = (await self.session.execute(select(teams).order_by(teams.c.name))).all()
        members = (
            await self.session.execute(
                select(team_members.c.team_id, users.c.name)
                .join(users, users.c.id == team_members.c.user_id)
                .order_by(users.c.name)
            )
        ).all()
        by_team: dict[int, list[str]] = {}
        for m in members:
            by_team.setdefault(m.team_id, []).append(m.name)
        return [Team(r.id, r.name, tuple(by_team.get(r.id, []))) for r in rows]

    async def take_turn(self, team_id: int) -> int | None:
        """The team member whose turn it is (round robin among the members signed in now, else
        among all its active members), remembered as the team's last; ``None`` for an empty team."""
        last = (
            await self.session.execute(
                select(teams.c.last_user_id).where(teams.c.id == team_id).with_for_update()
            )
        ).scalar()
        active = (
            select(team_members.c.user_id)
            .join(users, users.c.id == team_members.c.user_id)
            .where(team_members.c.team_id == team_id, users.c.active.is_(True))
        )
        members = [int(u) for u in (await self.session.execute(active)).scalars()]
        signed_in_stmt = (
            select(web_sessions.c.user_id)
            .where(web_sessions.c.user_id.in_(members), web_sessions.c.expires_at > now())
            .distinct()
        )
        signed_in = (
            [int(u) for u in (await self.session.execute(signed_in_stmt)).scalars()] if members else []
        )
        chosen = next_in_turn(signed_in or members, last)
        if chosen is not None:
            await self.session.execute(update(teams).where(teams.c.id == team_id).values(last_user_id=chosen))
        return chosen


async def count_open(session: AsyncSession, assignee_id: int) -> int:
    stmt = select(func.count()).where(
        tasks.c.assignee_id == assignee_id, tasks.c.status == TaskStatus.OPEN.value
    )
    return int((await session.execute(stmt)).scalar_one())
