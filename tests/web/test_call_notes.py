"""A note and a call type on each call: written by whoever may see the call, picked from the
admin's list, shown in the call log, the call page, the contact's history and the CSV export."""

from __future__ import annotations

import csv
import io

import httpx
from tests.conftest import ADMIN_PASSWORD, add_user, sign_in
from tests.services.test_followup_tasks import ADA, T0, callback

from callbridge.domain.directory import ContactKind, Phone
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.directory import ContactInput

PASSWORD = "user-password-1"


async def _client(app: object, name: str, password: str = PASSWORD) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))  # type: ignore[arg-type]
    c = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    c.headers["x-csrf-token"] = await sign_in(c, name, password)
    return c


async def test_notes_and_types_are_stored_shown_and_exported(hub: Hub, app: object) -> None:
    ann = await add_user(hub, "ann", Role.AGENT, PASSWORD)
    await add_user(hub, "nobody", Role.AGENT, PASSWORD)
    async with hub.db.unit() as repos:
        await repos.extensions.map("office", "1001", ann.id)
        contact = await repos.directory.create(
            ContactInput(kind=ContactKind.PERSON, name="Ada Lovelace", phones=(Phone("(415) 555-0100", ADA),))
        )
    await hub.handle_events(callback(ADA, "1001", T0))
    admin = await _client(app, "admin", ADMIN_PASSWORD)
    agent = await _client(app, "ann")
    nobody = await _client(app, "nobody")
    try:
        # The admin keeps the list; everyone reads it.
        assert (await agent.post("/api/v1/call-types", json={"name": "Sales"})).status_code == 403
        for name in ("Support", "Sales"):
            assert (await admin.post("/api/v1/call-types", json={"name": name})).status_code == 201
        twice = await admin.post("/api/v1/call-types", json={"name": "support"})
        assert twice.status_code == 400 and "exists" in twice.json()["error"]["message"]
        assert [t["name"] for t in (await agent.get("/api/v1/call-types")).json()["items"]] == [
            "Sales",
            "Support",
        ]

        call_id = (await agent.get("/api/v1/calls")).json()["items"][0]["id"]
        assert (await nobody.patch(f"/api/v1/calls/{call_id}", json={"note": "x"})).status_code == 404
        unknown = await agent.patch(f"/api/v1/calls/{call_id}", json={"call_type": "Gossip"})
        assert unknown.status_code == 400
        assert "Sales, Support" in unknown.json()["error"]["message"]
        assert (await agent.patch(f"/api/v1/calls/{call_id}", json={})).status_code == 400
        assert (await agent.patch(f"/api/v1/calls/{call_id}", json={"note": "x" * 10_001})).status_code == 422
        changed = await agent.patch(
            f"/api/v1/calls/{call_id}", json={"note": "=wants a quote for 40 seats", "call_type": "sales"}
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["note"], changed.json()["call_type"]) == (
            "=wants a quote for 40 seats",
            "Sales",
        )
        # The note alone leaves the type; the list and the detail show both.
        await agent.patch(f"/api/v1/calls/{call_id}", json={"note": "wants a quote for 40 seats"})
        listed = (await agent.get("/api/v1/calls")).json()["items"][0]
        assert (listed["note"], listed["call_type"]) == ("wants a quote for 40 seats", "Sales")
        assert (await agent.get(f"/api/v1/calls/{call_id}")).json()["call_type"] == "Sales"
        # A type taken off the list stays on the call.
        sales = next(
            t for t in (await admin.get("/api/v1/call-types")).json()["items"] if t["name"] == "Sales"
        )
        assert (await admin.delete(f"/api/v1/call-types/{sales['id']}")).status_code == 204
        assert (await agent.patch(f"/api/v1/calls/{call_id}", json={"call_type": "Sales"})).status_code == 200

        page = (await agent.get(f"/calls/{call_id}")).text
        assert "wants a quote for 40 seats" in page and '<td id="call-type">Sales</td>' in page
        assert "wants a quote for 40 seats" in (await agent.get("/calls")).text
        assert "wants a quote for 40 seats" in (await agent.get(f"/contacts/{contact}")).text
        # The call log's search finds words of the note.
        found = (await agent.get("/api/v1/calls", params={"q": "quote for 40"})).json()["items"]
        assert [c["id"] for c in found] == [call_id]

        export = await agent.get("/api/v1/calls/export.csv")
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert (rows[0]["call_type"], rows[0]["note"]) == ("Sales", "wants a quote for 40 seats")

        # The page's form.
        token = agent.headers["x-csrf-token"]
        saved = await agent.post(
            f"/calls/{call_id}/note",
            data={"note": "=HYPERLINK(1)", "call_type": "Support", "csrf_token": token},
        )
        assert saved.status_code == 303
        export = await agent.get("/api/v1/calls/export.csv")
        row = next(csv.DictReader(io.StringIO(export.text)))
        assert (row["call_type"], row["note"]) == ("Support", "'=HYPERLINK(1)")  # never a formula
    finally:
        for c in (admin, agent, nobody):
            await c.aclose()
