"""Follow-up tasks and the teams that share callbacks: thin routes over services/tasks.py."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from callbridge.domain.errors import Forbidden, InvalidInput, NotFound
from callbridge.domain.mail import validate_address
from callbridge.domain.tasks import TaskStatus
from callbridge.domain.users import User, validate_username
from callbridge.services.tasks import task_dict
from callbridge.store.mail import MailPrefs
from callbridge.store.repos import Repos
from callbridge.web.deps import AdminUser, CurrentUser, HubDep, RepoDep
from callbridge.web.schemas import Id, Page

router = APIRouter(prefix="/api/v1")


class TaskContactOut(BaseModel):
    id: int
    name: str
    company: str | None


class TaskOut(BaseModel):
    id: int
    kind: Literal["callback", "voicemail", "follow_up"]
    number: str
    contact: TaskContactOut | None
    assignee: str | None = Field(description="The user name of who owes the call; null for nobody.")
    status: Literal["open", "done"]
    due_at: datetime = Field(description="When the call is owed: the missed call, or the end of a snooze.")
    created_at: datetime
    closed_at: datetime | None
    closed_by_call_id: int | None = Field(description="The answered call that closed the task by itself.")
    calls: list[int] = Field(description="The calls the task is about (missed calls fold into one task).")


class TaskCommentOut(BaseModel):
    id: int
    user: str
    body: str
    created_at: datetime


class TaskDetailOut(TaskOut):
    comments: list[TaskCommentOut]


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    call_id: Id = Field(description="The call to follow up (one you may see).")
    assignee: str | None = Field(default=None, max_length=64, description="A user name; default: you.")
    due_at: datetime | None = Field(default=None, description="When; default: now.")
    comment: str | None = Field(default=None, max_length=2000)


class TaskUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["done"] | None = Field(default=None, description="'done' closes the task.")
    assignee: str | None = Field(default=None, max_length=64, description="Hand the task to this user.")
    snooze_until: datetime | None = Field(default=None, description="Owe the call from this time on.")
    comment: str | None = Field(default=None, max_length=2000)


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    members: list[str] = Field(default_factory=list, max_length=500, description="User names.")


class TeamMembers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: list[str] = Field(max_length=500)


class TeamOut(BaseModel):
    id: int
    name: str
    members: list[str]


def _out(item: dict[str, Any]) -> TaskOut:
    return TaskOut.model_validate(item)


async def _user_named(repos: Repos, name: str) -> User:
    stored = await repos.users.get_by_name(name.strip())
    if stored is None or not stored.user.active:
        raise InvalidInput(f"no active user named {name!r}")
    return stored.user


@router.get("/tasks", tags=["tasks"], summary="Follow-up tasks, the most owed first")
async def list_tasks(
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    status: Annotated[Literal["open", "done"] | None, Query()] = "open",
    assignee: Annotated[str, Query(max_length=64, description="'me', a user name, or 'all'")] = "me",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[TaskOut]:
    """An agent sees their own tasks only; managers and admins anyone's (``assignee=all``:
    everyone's, unassigned ones included)."""
    assert hub.followups is not None
    any_assignee = False
    if assignee == "me":
        assignee_id: int | None = user.id
    elif assignee == "all":
        if not user.sees_all_calls:
            raise Forbidden("agents see their own tasks only: use assignee=me")
        assignee_id, any_assignee = None, True
    else:
        named = await repos.users.get_by_name(assignee.strip())
        if named is None:
            raise InvalidInput(f"no user named {assignee!r}")
        if named.user.id != user.id and not user.sees_all_calls:
            raise Forbidden("agents see their own tasks only: use assignee=me")
        assignee_id = named.user.id
    found, after = await repos.tasks.search(
        status=TaskStatus(status) if status else None,
        assignee_id=assignee_id,
        any_assignee=any_assignee,
        cursor=cursor,
        limit=limit,
        today=hub.followups.today(),
    )
    return Page(items=[_out(task_dict(t)) for t in found], next=after)


@router.get("/tasks/{task_id:int}", tags=["tasks"])
async def get_task(task_id: Id, user: CurrentUser, repos: RepoDep, hub: HubDep) -> TaskDetailOut:
    assert hub.followups is not None
    task = await hub.followups.visible(task_id, user, hub.followup_store(repos))
    comments = [
        TaskCommentOut(id=c.id, user=c.user, body=c.body, created_at=c.created_at)
        for c in await repos.tasks.comments(task_id)
    ]
    return TaskDetailOut.model_validate({**task_dict(task), "comments": comments})


@router.post("/tasks", status_code=201, tags=["tasks"], summary="Follow up a call")
async def create_task(body: TaskCreate, user: CurrentUser, repos: RepoDep, hub: HubDep) -> TaskOut:
    assert hub.followups is not None
    call = await repos.calls.find(body.call_id, viewer=user)
    if call is None:
        raise NotFound(f"no call with id {body.call_id}")
    assignee = user
    if body.assignee is not None and body.assignee.strip() != user.name:
        if not user.sees_all_calls:
            raise Forbidden("an agent makes follow-ups for themselves; a manager can assign them")
        assignee = await _user_named(repos, body.assignee)
    store = hub.followup_store(repos)
    task = await hub.followups.create_follow_up(
        call.external_number,
        call.contact.id if call.contact else None,
        call.id,
        assignee.id,
        body.due_at,
        store,
    )
    if body.comment:
        task, _ = await hub.followups.update(task.id, user, store, comment=body.comment)
    await repos.commit()
    await hub.publish([hub.followups.message(task, [assignee.id], "created")])
    return _out(task_dict(task))


@router.patch("/tasks/{task_id:int}", tags=["tasks"], summary="Close, reassign, snooze or comment a task")
async def update_task(
    task_id: Id, body: TaskUpdate, user: CurrentUser, repos: RepoDep, hub: HubDep
) -> TaskOut:
    """409 when the task is done already; 403 for an agent changing someone else's task."""
    assert hub.followups is not None
    if body.model_dump(exclude_unset=True, exclude_none=True) == {}:
        raise InvalidInput("nothing to change: give status, assignee, snooze_until or comment")
    assignee_id = None
    if body.assignee is not None:
        assignee_id = (await _user_named(repos, body.assignee)).id
    task, tell = await hub.followups.update(
        task_id,
        user,
        hub.followup_store(repos),
        status=TaskStatus(body.status) if body.status else None,
        assignee_id=assignee_id,
        snooze_until=body.snooze_until,
        comment=body.comment,
    )
    await repos.commit()
    if task.status is TaskStatus.DONE and hub.connectors is not None:
        hub.connectors.wake()  # committed: the ERP's to-do for the call is closed now
    change = "closed" if task.status is TaskStatus.DONE else "updated"
    await hub.publish([hub.followups.message(task, tell, change)])
    return _out(task_dict(task))


# -- teams (admin) ----------------------------------------------------------------------------


async def _member_ids(repos: Repos, names: list[str]) -> list[int]:
    return [(await _user_named(repos, validate_username(n))).id for n in names]


@router.get("/teams", tags=["teams"])
async def list_teams(user: AdminUser, repos: RepoDep) -> Page[TeamOut]:
    return Page(
        items=[TeamOut(id=t.id, name=t.name, members=list(t.members)) for t in await repos.teams.all()]
    )


@router.post("/teams", status_code=201, tags=["teams"], summary="A team that shares callbacks round robin")
async def create_team(body: TeamIn, user: AdminUser, repos: RepoDep) -> TeamOut:
    name = body.name.strip()
    if not name:
        raise InvalidInput("the team name is empty")
    members = await _member_ids(repos, body.members)
    team_id = await repos.teams.create(name)
    await repos.teams.set_members(team_id, members)
    team = next(t for t in await repos.teams.all() if t.id == team_id)
    return TeamOut(id=team.id, name=team.name, members=list(team.members))


@router.put("/teams/{team_id:int}/members", tags=["teams"])
async def set_team_members(team_id: Id, body: TeamMembers, user: AdminUser, repos: RepoDep) -> TeamOut:
    team = next((t for t in await repos.teams.all() if t.id == team_id), None)
    if team is None:
        raise NotFound(f"no team with id {team_id}")
    await repos.teams.set_members(team_id, await _member_ids(repos, body.members))
    team = next(t for t in await repos.teams.all() if t.id == team_id)
    return TeamOut(id=team.id, name=team.name, members=list(team.members))


@router.delete("/teams/{team_id:int}", status_code=204, tags=["teams"])
async def delete_team(team_id: Id, user: AdminUser, repos: RepoDep) -> Response:
    if not await repos.teams.delete(team_id):
        raise NotFound(f"no team with id {team_id}")
    return Response(status_code=204)


# -- e-mail (your own settings) ---------------------------------------------------------------


class MailPrefsIo(BaseModel):
    """Where callbridge e-mails you, and whether you want the daily digest (open follow-ups and
    the last day's missed calls)."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field(default="", max_length=254, description="Empty: no e-mail.")
    daily_digest: bool = Field(default=False)
    new_voicemail: bool | None = Field(
        default=None, description="An e-mail for each new voicemail in your mailboxes; left out: unchanged."
    )


@router.get("/me/email", tags=["users"])
async def get_my_email(user: CurrentUser, repos: RepoDep) -> MailPrefsIo:
    prefs = await repos.mail.prefs(user.id)
    return MailPrefsIo(email=prefs.email, daily_digest=prefs.daily_digest, new_voicemail=prefs.new_voicemail)


@router.put("/me/email", tags=["users"])
async def set_my_email(body: MailPrefsIo, user: CurrentUser, repos: RepoDep) -> MailPrefsIo:
    email = validate_address(body.email) if body.email.strip() else ""
    if body.daily_digest and not email:
        raise InvalidInput("the daily digest needs an e-mail address")
    voicemail = body.new_voicemail
    if voicemail is None:
        voicemail = (await repos.mail.prefs(user.id)).new_voicemail and bool(email)
    elif voicemail and not email:
        raise InvalidInput("an e-mail for new voicemail needs an e-mail address")
    await repos.mail.set_prefs(user.id, MailPrefs(email, body.daily_digest, voicemail))
    return MailPrefsIo(email=email, daily_digest=body.daily_digest, new_voicemail=voicemail)
