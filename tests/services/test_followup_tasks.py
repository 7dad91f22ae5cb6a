"""Follow-up tasks made and closed by calls as they are ingested: who gets a missed call, how
repeated ones fold, when a short abandon leaves nothing, and how a callback closes the task."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import add_user

from callbridge.domain.directory import ContactKind, Phone
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CallStarted,
    Direction,
    Disposition,
    Event,
)
from callbridge.domain.tasks import Task, TaskStatus, next_in_turn
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.directory import ContactInput
from callbridge.services.live import DESK_TOPIC
from callbridge.services.tasks import task_title

ADA = "+14155550100"
_ids = itertools.count(1)
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def missed(number: str, extensions: tuple[str, ...], at: datetime, ring: int = 20) -> list[Event]:
    call = f"m-{next(_ids)}"
    events: list[Event] = [
        CallStarted(
            pbx="office",
            call_id=call,
            at=at,
            direction=Direction.INBOUND,
            from_number=number,
            to_number="+14155559999",
        )
    ]
    events += [
        CallRinging(pbx="office", call_id=call, at=at + timedelta(seconds=1), extension=e) for e in extensions
    ]
    events.append(
        CallEnded(pbx="office", call_id=call, at=at + timedelta(seconds=ring), disposition=Disposition.MISSED)
    )
    return events


def callback(number: str, extension: str, at: datetime, answered: bool = True) -> list[Event]:
    call = f"o-{next(_ids)}"
    events: list[Event] = [
        CallStarted(
            pbx="office",
            call_id=call,
            at=at,
            direction=Direction.OUTBOUND,
            from_number=extension,
            to_number=number,
            placed_by=extension,
        )
    ]
    if answered:
        events.append(CallAnswered(pbx="office", call_id=call, at=at + timedelta(seconds=5), extension=""))
    events.append(
        CallEnded(
            pbx="office",
            call_id=call,
            at=at + timedelta(seconds=60),
            disposition=Disposition.ANSWERED if answered else Disposition.MISSED,
        )
    )
    return events


async def tasks_of(hub: Hub, status: TaskStatus | None = None) -> list[Task]:
    async with hub.db.unit() as repos:
        found, _ = await repos.tasks.search(
            status=status, assignee_id=None, any_assignee=True, today=T0 - timedelta(days=1)
        )
        return found


async def call_id_of(hub: Hub, pbx_call_id: str) -> int:
    from callbridge.store.calls import CallFilter

    async with hub.db.unit() as repos:
        found, _ = await repos.calls.search(CallFilter(), limit=100)
    return next(c.id for c in found if c.pbx_call_id == pbx_call_id)


async def setup(hub: Hub) -> dict[str, int]:
    users = {n: (await add_user(hub, n, Role.AGENT)).id for n in ("ann", "bob", "carol", "dave", "erin")}
    async with hub.db.unit() as repos:
        await repos.extensions.map("office", "1001", users["ann"])
        await repos.extensions.map("office", "1002", users["bob"])
    return users


async def test_a_missed_call_leaves_a_callback_task_for_the_rung_user(hub: Hub) -> None:
    users = await setup(hub)
    events = missed(ADA, ("1001",), T0)
    await hub.handle_events(events)
    [task] = await tasks_of(hub)
    assert (task.kind.value, task.number, task.assignee_id, task.status) == (
        "callback",
        ADA,
        users["ann"],
        TaskStatus.OPEN,
    )
    assert task.calls == (await call_id_of(hub, events[0].call_id),)
    assert task.due_at == T0 + timedelta(seconds=20)  # owed from the moment the caller gave up
    # The early pop's point read (no session) finds who owes the caller a call, and since when.
    [(owner, since)] = await hub.fast_directory.owed(ADA)
    assert owner == users["ann"] and since == task.created_at and since.tzinfo is not None
    assert await hub.fast_directory.owed("+14155550199") == []


async def test_three_missed_calls_from_one_number_fold_into_one_task(hub: Hub) -> None:
    await setup(hub)
    async with hub.db.unit() as repos:
        await repos.directory.create(
            ContactInput(kind=ContactKind.PERSON, name="Ada Lovelace", phones=(Phone("(415) 555-0100", ADA),))
        )
    for n in range(3):
        last = missed(ADA, ("1001",), T0 + timedelta(minutes=n))
        await hub.handle_events(last)
    [task] = await tasks_of(hub)
    assert len(task.calls) == 3
    assert task_title(task, "US") == "call back (415) 555-0100, Ada Lovelace, missed 3× today"
    # The end re-reported (a PBX retry with another outcome word, so another key) adds nothing.
    end = last[-1]
    assert isinstance(end, CallEnded)
    await hub.handle_events(
        [CallEnded(pbx="office", call_id=end.call_id, at=end.at, disposition=Disposition.ABANDONED)]
    )
    [task] = await tasks_of(hub)
    assert len(task.calls) == 3


async def test_a_short_abandon_leaves_no_task(hub: Hub) -> None:
    await setup(hub)
    assert hub.settings.followup_min_ring_seconds == 5
    await hub.handle_events(missed(ADA, ("1001",), T0, ring=3))
    assert await tasks_of(hub) == []
    await hub.handle_events(missed(ADA, ("1001",), T0 + timedelta(minutes=1), ring=5))
    assert len(await tasks_of(hub)) == 1


async def test_a_ring_group_call_goes_to_the_contacts_owner(hub: Hub) -> None:
    users = await setup(hub)
    async with hub.db.unit() as repos:
        await repos.directory.create(
            ContactInput(
                kind=ContactKind.PERSON,
                name="Ada Lovelace",
                phones=(Phone("(415) 555-0100", ADA),),
                owner_id=users["carol"],
            )
        )
    await hub.handle_events(missed(ADA, ("1001", "1002"), T0))
    [task] = await tasks_of(hub)
    assert task.assignee_id == users["carol"]
    assert task.contact_name == "Ada Lovelace"


async def _sign_in(hub: Hub, user_id: int) -> None:
    async with hub.db.unit() as repos:
        await repos.sessions.add(
            f"s-{user_id}", user_id, datetime.now(UTC), datetime.now(UTC) + timedelta(hours=1)
        )


async def test_nobody_elses_call_goes_round_robin_to_signed_in_team_members(hub: Hub) -> None:
    users = await setup(hub)
    async with hub.db.unit() as repos:
        team = await repos.teams.create("callbacks")
        await repos.teams.set_members(team, [users["dave"], users["erin"], users["carol"]])
    numbers = [f"+1415555020{n}" for n in range(4)]
    # Nobody signed in: round robin among every member.
    await hub.handle_events(missed(numbers[0], ("1009",), T0))
    await hub.handle_events(missed(numbers[1], ("1009",), T0))
    # Only dave and erin are signed in: carol is skipped.
    await _sign_in(hub, users["dave"])
    await _sign_in(hub, users["erin"])
    await hub.handle_events(missed(numbers[2], ("1009",), T0))
    await hub.handle_events(missed(numbers[3], ("1009",), T0))
    by_number = {t.number: t.assignee_id for t in await tasks_of(hub)}
    order = sorted([users["dave"], users["erin"], users["carol"]])
    assert by_number[numbers[0]] == order[0]
    assert by_number[numbers[1]] == order[1]
    signed = sorted([users["dave"], users["erin"]])
    assert [by_number[numbers[2]], by_number[numbers[3]]] == [
        next_in_turn(signed, order[1]),
        next_in_turn(signed, next_in_turn(signed, order[1])),
    ]
    assert {by_number[numbers[2]], by_number[numbers[3]]} == set(signed)


async def test_an_answered_callback_by_the_assignee_closes_the_task_and_links_the_call(hub: Hub) -> None:
    users = await setup(hub)
    await hub.handle_events(missed(ADA, ("1001",), T0))
    # Bob reaching the number does not close ann's task (the setting is off by default) ...
    await hub.handle_events(callback(ADA, "1002", T0 + timedelta(minutes=5)))
    # ... nor does ann's callback nobody answered.
    await hub.handle_events(callback(ADA, "1001", T0 + timedelta(minutes=6), answered=False))
    [task] = await tasks_of(hub)
    assert task.status is TaskStatus.OPEN and task.assignee_id == users["ann"]
    hers = callback(ADA, "1001", T0 + timedelta(minutes=10))
    await hub.handle_events(hers)
    [task] = await tasks_of(hub)
    assert task.status is TaskStatus.DONE
    assert task.closed_by_call_id == await call_id_of(hub, hers[0].call_id)
    assert task.closed_at is not None
    # A new missed call after that opens a new task.
    await hub.handle_events(missed(ADA, ("1001",), T0 + timedelta(minutes=20)))
    assert [t.status for t in await tasks_of(hub, TaskStatus.OPEN)] == [TaskStatus.OPEN]


async def test_with_close_by_anyone_a_colleagues_call_closes_it(hub: Hub) -> None:
    import dataclasses

    assert hub.followups is not None
    hub.followups.rules = dataclasses.replace(hub.followups.rules, close_by_anyone=True)
    await setup(hub)
    await hub.handle_events(missed(ADA, ("1001",), T0))
    await hub.handle_events(callback(ADA, "1002", T0 + timedelta(minutes=5)))
    [task] = await tasks_of(hub)
    assert task.status is TaskStatus.DONE


async def test_the_assignee_desk_is_told_of_the_new_task(hub: Hub) -> None:
    users = await setup(hub)
    seen: list[dict[str, Any]] = []
    async with hub.bus.subscribe(DESK_TOPIC) as messages:

        async def collect() -> None:
            async for message in messages:
                seen.append(message)

        collector = asyncio.create_task(collect())
        await hub.handle_events(missed(ADA, ("1001",), T0))
        await asyncio.sleep(0.1)
        collector.cancel()
    tasks = [m for m in seen if m["msg"]["type"] == "task"]
    assert len(tasks) == 1
    assert tasks[0]["users"] == [users["ann"]]
    assert tasks[0]["msg"]["change"] == "created"
    assert tasks[0]["msg"]["task"]["number"] == ADA
    assert tasks[0]["msg"]["title"].startswith("call back (415) 555-0100")


async def test_two_missed_calls_of_one_number_in_one_big_batch_fold_into_one_task(hub: Hub) -> None:
    """A big batch is spread over parallel transactions on PostgreSQL (its "lanes"), so one
    caller's two missed calls can be stored side by side; their follow-up still folds into one
    task (it runs once the lanes have committed, call after call)."""
    await setup(hub)
    events: list[Event] = []
    for n in range(400):  # enough calls for several lanes
        events += missed(f"+1415556{n:04d}", ("1002",), T0 + timedelta(seconds=n))
    first, second = missed(ADA, ("1001",), T0), missed(ADA, ("1001",), T0 + timedelta(minutes=1))
    events += first + second  # consecutive calls: different lanes
    await hub.ingest_batch(events)
    async with hub.db.unit() as repos:
        ada = await repos.tasks.open_ids_for_number(ADA)
        assert len(ada) == 1, ada
        task = await repos.tasks.get(ada[0][0])
        assert task is not None and len(task.calls) == 2
        assert len(await repos.tasks.open_ids_for_number("+14155560399")) == 1  # the others, each theirs
