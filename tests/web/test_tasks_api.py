"""The tasks API: an agent sees and changes their own tasks only; a closed task is not changed;
snooze, reassign, comment; a follow-up from a call; teams are the admin's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tests.conftest import ADMIN_PASSWORD, add_user, sign_in
from tests.services.test_followup_tasks import ADA, T0, callback, missed

from callbridge.domain.users import Role
from callbridge.hub import Hub

PASSWORD = "user-password-1"


@pytest.fixture
async def people(hub: Hub) -> dict[str, int]:
    users = {n: (await add_user(hub, n, Role.AGENT, PASSWORD)).id for n in ("ann", "bob", "nobody")}
    users["mia"] = (await add_user(hub, "mia", Role.MANAGER, PASSWORD)).id
    async with hub.db.unit() as repos:
        await repos.extensions.map("office", "1001", users["ann"])
        await repos.extensions.map("office", "1002", users["bob"])
    return users


@pytest.fixture
async def as_user(app: object) -> AsyncIterator[object]:
    opened: list[httpx.AsyncClient] = []

    async def open_as(name: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000 + len(opened)))  # type: ignore[arg-type]
        c = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        opened.append(c)
        c.headers["x-csrf-token"] = await sign_in(c, name, ADMIN_PASSWORD if name == "admin" else PASSWORD)
        return c

    yield open_as
    for c in opened:
        await c.aclose()


async def test_an_agent_sees_only_their_own_tasks(hub: Hub, people: dict[str, int], as_user: object) -> None:
    await hub.handle_events(missed(ADA, ("1001",), T0))
    ann = await as_user("ann")  # type: ignore[operator]
    nobody = await as_user("nobody")  # type: ignore[operator]
    mine = (await ann.get("/api/v1/tasks?status=open&assignee=me")).json()
    assert [t["assignee"] for t in mine["items"]] == ["ann"]
    item = mine["items"][0]
    assert set(item) == {
        "id",
        "kind",
        "number",
        "contact",
        "assignee",
        "status",
        "due_at",
        "created_at",
        "closed_at",
        "closed_by_call_id",
        "calls",
    }
    assert (item["kind"], item["number"], item["status"], len(item["calls"])) == ("callback", ADA, "open", 1)
    assert mine["next"] is None
    # An agent who owns nothing sees nothing, and may not look at others' lists or tasks.
    assert (await nobody.get("/api/v1/tasks")).json()["items"] == []
    refused = await nobody.get("/api/v1/tasks?assignee=ann")
    assert refused.status_code == 403
    assert "own tasks" in refused.json()["error"]["message"]
    assert (await nobody.get("/api/v1/tasks?assignee=all")).status_code == 403
    assert (await nobody.get(f"/api/v1/tasks/{item['id']}")).status_code == 404
    changed = await nobody.patch(f"/api/v1/tasks/{item['id']}", json={"status": "done"})
    assert changed.status_code == 403
    assert "ann" in changed.json()["error"]["message"]
    # A manager sees everyone's.
    mia = await as_user("mia")  # type: ignore[operator]
    assert [t["id"] for t in (await mia.get("/api/v1/tasks?assignee=ann")).json()["items"]] == [item["id"]]
    assert [t["id"] for t in (await mia.get("/api/v1/tasks?assignee=all")).json()["items"]] == [item["id"]]


async def test_snooze_comment_reassign_close_and_then_409(
    hub: Hub, people: dict[str, int], as_user: object
) -> None:
    await hub.handle_events(missed(ADA, ("1001",), T0))
    await hub.handle_events(missed("+14155550111", ("1001",), T0 + timedelta(minutes=1)))
    ann = await as_user("ann")  # type: ignore[operator]
    items = (await ann.get("/api/v1/tasks")).json()["items"]
    assert [t["number"] for t in items] == [ADA, "+14155550111"]  # the most owed first
    first = items[0]["id"]
    later = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    snoozed = await ann.patch(f"/api/v1/tasks/{first}", json={"snooze_until": later.isoformat()})
    assert snoozed.status_code == 200, snoozed.text
    assert datetime.fromisoformat(snoozed.json()["due_at"]) == later
    assert [t["number"] for t in (await ann.get("/api/v1/tasks")).json()["items"]] == ["+14155550111", ADA]
    past = await ann.patch(f"/api/v1/tasks/{first}", json={"snooze_until": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400 and "past" in past.json()["error"]["message"]
    assert (await ann.patch(f"/api/v1/tasks/{first}", json={})).status_code == 400
    assert (await ann.patch(f"/api/v1/tasks/{first}", json={"comment": "left a message"})).status_code == 200
    detail = (await ann.get(f"/api/v1/tasks/{first}")).json()
    assert [(c["user"], c["body"]) for c in detail["comments"]] == [("ann", "left a message")]
    # Ann hands it to bob: it leaves her list and is his now.
    handed = await ann.patch(f"/api/v1/tasks/{first}", json={"assignee": "bob"})
    assert handed.json()["assignee"] == "bob"
    assert [t["id"] for t in (await ann.get("/api/v1/tasks")).json()["items"]] != [] and first not in [
        t["id"] for t in (await ann.get("/api/v1/tasks")).json()["items"]
    ]
    assert (await ann.patch(f"/api/v1/tasks/{first}", json={"status": "done"})).status_code == 403
    bob = await as_user("bob")  # type: ignore[operator]
    done = await bob.patch(f"/api/v1/tasks/{first}", json={"status": "done"})
    assert done.json()["status"] == "done" and done.json()["closed_at"]
    assert done.json()["closed_by_call_id"] is None
    again = await bob.patch(f"/api/v1/tasks/{first}", json={"comment": "too late"})
    assert again.status_code == 409
    assert "done" in again.json()["error"]["message"]
    assert [t["id"] for t in (await bob.get("/api/v1/tasks?status=done")).json()["items"]] == [first]
    unknown = await ann.patch("/api/v1/tasks/999999", json={"status": "done"})
    assert unknown.status_code == 404
    bad_user = await ann.patch(f"/api/v1/tasks/{items[1]['id']}", json={"assignee": "ghost"})
    assert bad_user.status_code == 400


async def test_a_follow_up_from_a_call_the_user_may_see(
    hub: Hub, people: dict[str, int], as_user: object
) -> None:
    events = callback(ADA, "1001", T0)
    await hub.handle_events(events)
    admin = await as_user("admin")  # type: ignore[operator]
    ann = await as_user("ann")  # type: ignore[operator]
    nobody = await as_user("nobody")  # type: ignore[operator]
    call_id = (await ann.get("/api/v1/calls")).json()["items"][0]["id"]
    assert (await nobody.post("/api/v1/tasks", json={"call_id": call_id})).status_code == 404
    made = await ann.post("/api/v1/tasks", json={"call_id": call_id, "comment": "send the quote"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["kind"], body["number"], body["assignee"], body["calls"]) == (
        "follow_up",
        ADA,
        "ann",
        [call_id],
    )
    given = await ann.post("/api/v1/tasks", json={"call_id": call_id, "assignee": "bob"})
    assert given.status_code == 403
    by_admin = await admin.post("/api/v1/tasks", json={"call_id": call_id, "assignee": "bob"})
    assert by_admin.json()["assignee"] == "bob"
    # The call it was made from does not close it; her next answered call with Ada does.
    await hub.handle_events(callback(ADA, "1001", T0 + timedelta(minutes=5)))
    mine = (await ann.get("/api/v1/tasks?status=done")).json()["items"]
    assert [t["id"] for t in mine] == [body["id"]]
    assert mine[0]["closed_by_call_id"] not in (None, call_id)


async def test_teams_are_managed_by_admins(hub: Hub, people: dict[str, int], as_user: object) -> None:
    admin = await as_user("admin")  # type: ignore[operator]
    ann = await as_user("ann")  # type: ignore[operator]
    assert (await ann.post("/api/v1/teams", json={"name": "support"})).status_code == 403
    made = await admin.post("/api/v1/teams", json={"name": "support", "members": ["ann", "bob"]})
    assert made.status_code == 201
    assert made.json()["members"] == ["ann", "bob"]
    assert (await admin.post("/api/v1/teams", json={"name": "support"})).status_code == 400
    assert (await admin.post("/api/v1/teams", json={"name": "x", "members": ["ghost"]})).status_code == 400
    team = made.json()["id"]
    changed = await admin.put(f"/api/v1/teams/{team}/members", json={"members": ["bob"]})
    assert changed.json()["members"] == ["bob"]
    # Nobody's phone rang: bob, the team's only member, owes the call.
    await hub.handle_events(missed("+14155550177", ("1009",), T0))
    bob = await as_user("bob")  # type: ignore[operator]
    assert [t["number"] for t in (await bob.get("/api/v1/tasks")).json()["items"]] == ["+14155550177"]
    assert (await admin.delete(f"/api/v1/teams/{team}")).status_code == 204
    assert (await admin.delete(f"/api/v1/teams/{team}")).status_code == 404


async def test_my_email_settings(hub: Hub, people: dict[str, int], as_user: object) -> None:
    ann = await as_user("ann")  # type: ignore[operator]
    assert (await ann.get("/api/v1/me/email")).json() == {
        "email": "",
        "daily_digest": False,
        "new_voicemail": False,
    }
    bad = await ann.put("/api/v1/me/email", json={"email": "not-an-address", "daily_digest": True})
    assert bad.status_code == 400 and "not an e-mail address" in bad.json()["error"]["message"]
    empty = await ann.put("/api/v1/me/email", json={"email": "", "daily_digest": True})
    assert empty.status_code == 400 and "needs an e-mail address" in empty.json()["error"]["message"]
    ok = await ann.put("/api/v1/me/email", json={"email": " ann@example.com ", "daily_digest": True})
    saved = {"email": "ann@example.com", "daily_digest": True, "new_voicemail": False}
    assert ok.json() == saved
    assert (await ann.get("/api/v1/me/email")).json() == saved


async def test_the_account_page_sets_my_email(hub: Hub, people: dict[str, int], as_user: object) -> None:
    ann = await as_user("ann")  # type: ignore[operator]
    token = ann.headers["x-csrf-token"]
    page = (await ann.get("/account")).text
    assert "This hub sends no e-mail yet" in page  # no SMTP server in these tests
    bad = await ann.post("/account/email", data={"email": "ann@", "daily_digest": "on", "csrf_token": token})
    assert bad.status_code == 400 and "is not an e-mail address" in bad.text
    saved = await ann.post(
        "/account/email", data={"email": "ann@example.com", "daily_digest": "on", "csrf_token": token}
    )
    assert saved.status_code == 303
    assert (await ann.get("/api/v1/me/email")).json() == {
        "email": "ann@example.com",
        "daily_digest": True,
        "new_voicemail": False,
    }
    assert 'value="ann@example.com"' in (await ann.get("/account")).text
