"""Who owns a contact decides who sees its calls and whose phone the dialplan rings: agents
cannot change it (issue #20 item 2), on any path that writes a contact."""

from __future__ import annotations

import httpx
from tests.conftest import add_user, api_token, sign_in
from tests.web.test_calls_api import feed, inbound

from callbridge.domain.directory import ContactKind, phone_from_input
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.directory import ContactInput
from callbridge.store.directory import SqlDialplanTokens, SqlDirectory, SqlExtensions
from callbridge.web.routes.contacts import COMPANY_REFUSED, OWNER_REFUSED

ADA = "+14155550100"


async def world(hub: Hub) -> dict[str, int]:
    """Alice is an agent who owns nothing; Bob owns the Bobco company; Ada (no owner) works for
    Acme (no owner) and called three times, answered by nobody Alice knows."""
    alice = await add_user(hub, "alice", Role.AGENT)
    bob = await add_user(hub, "bob", Role.AGENT)
    await add_user(hub, "mgr", Role.MANAGER)
    async with hub.db.unit() as repos:
        await repos.pbxes.add("main", PbxKind.ASTERISK, {}, {})
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        acme = await d.create(ContactInput(ContactKind.COMPANY, "Acme"))
        other = await d.create(ContactInput(ContactKind.COMPANY, "Other Ltd"))
        bobco = await d.create(ContactInput(ContactKind.COMPANY, "Bobco", owner_id=bob.id))
        ada = await d.create(
            ContactInput(ContactKind.PERSON, "Ada", company_id=acme, phones=(phone_from_input(ADA, "US"),))
        )
        bobs = await d.create(ContactInput(ContactKind.PERSON, "Bob's client", owner_id=bob.id))
        await SqlExtensions(s).map("main", "1001", alice.id)
        await SqlExtensions(s).map("main", "1002", bob.id)
    for n in range(3):
        await feed(hub, inbound(f"c{n}", ADA, n, answered_by="1009"))
    return {
        "alice": alice.id,
        "bob": bob.id,
        "acme": acme,
        "other": other,
        "bobco": bobco,
        "ada": ada,
        "bobs": bobs,
    }


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def dialplan_owner(hub: Hub, client: httpx.AsyncClient) -> str:
    async with hub.db.session() as s:
        token = await SqlDialplanTokens(s, hub.box).token_for("main")
    return (await client.get("/dialplan/owner", params={"number": ADA, "token": token})).text


async def test_an_agent_cannot_make_themselves_the_owner(hub: Hub, client: httpx.AsyncClient) -> None:
    ids = await world(hub)
    alice = bearer(await api_token(hub, "alice"))
    assert (await client.get("/api/v1/calls", headers=alice)).json()["items"] == []
    taken = await client.patch(f"/api/v1/contacts/{ids['ada']}", json={"owner": "alice"}, headers=alice)
    assert taken.status_code == 403
    assert taken.json()["error"] == {"code": "forbidden", "message": OWNER_REFUSED}
    # Nothing changed: no calls widened, the dialplan still rings nobody's phone.
    assert (await client.get("/api/v1/calls", headers=alice)).json()["items"] == []
    assert await dialplan_owner(hub, client) == ""
    contact = (await client.get(f"/api/v1/contacts/{ids['ada']}", headers=alice)).json()
    assert contact["owner"] is None
    # The same for a company, for another user's contact, and for a new contact.
    company = await client.patch(f"/api/v1/contacts/{ids['acme']}", json={"owner": "alice"}, headers=alice)
    assert company.status_code == 403
    stolen = await client.patch(f"/api/v1/contacts/{ids['bobs']}", json={"owner": "alice"}, headers=alice)
    assert stolen.status_code == 403
    dropped = await client.patch(f"/api/v1/contacts/{ids['bobs']}", json={"owner": None}, headers=alice)
    assert dropped.status_code == 403
    created = await client.post(
        "/api/v1/contacts",
        json={"name": "Mine", "phones": [{"number": ADA}], "owner": "alice"},
        headers=alice,
    )
    assert created.status_code == 403
    assert (await client.get("/api/v1/contacts", params={"q": "Mine"}, headers=alice)).json()["items"] == []


async def test_agents_still_edit_contacts_and_owners_hand_over(hub: Hub, client: httpx.AsyncClient) -> None:
    ids = await world(hub)
    alice = bearer(await api_token(hub, "alice"))
    bob = bearer(await api_token(hub, "bob"))
    mgr = bearer(await api_token(hub, "mgr"))
    # Everything else is an agent's to edit, and naming the current owner again changes nothing.
    edited = await client.patch(
        f"/api/v1/contacts/{ids['bobs']}", json={"notes": "called back", "owner": "bob"}, headers=alice
    )
    assert edited.status_code == 200 and edited.json()["owner"] == "bob"
    made = await client.post("/api/v1/contacts", json={"name": "New lead"}, headers=alice)
    assert made.status_code == 201 and made.json()["owner"] is None
    # Moving Ada between companies nobody owns changes no one's calls.
    moved = await client.patch(
        f"/api/v1/contacts/{ids['ada']}", json={"company_id": ids["other"]}, headers=alice
    )
    assert moved.status_code == 200
    # The current owner hands over; a manager assigns.
    handed = await client.patch(f"/api/v1/contacts/{ids['bobs']}", json={"owner": "alice"}, headers=bob)
    assert handed.status_code == 200 and handed.json()["owner"] == "alice"
    assigned = await client.patch(f"/api/v1/contacts/{ids['ada']}", json={"owner": "alice"}, headers=mgr)
    assert assigned.status_code == 200
    assert len((await client.get("/api/v1/calls", headers=alice)).json()["items"]) == 3
    assert await dialplan_owner(hub, client) == "PJSIP/1001"


async def test_an_agent_cannot_move_a_contact_into_an_owned_company(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    ids = await world(hub)
    bob = bearer(await api_token(hub, "bob"))
    # Bob owns Bobco: Ada in Bobco would show him her calls and ring his phone for her.
    moved = await client.patch(
        f"/api/v1/contacts/{ids['ada']}", json={"company_id": ids["bobco"]}, headers=bob
    )
    assert moved.status_code == 403
    assert moved.json()["error"]["message"] == COMPANY_REFUSED
    assert (await client.get("/api/v1/calls", headers=bob)).json()["items"] == []
    assert await dialplan_owner(hub, client) == ""


async def test_the_contact_form_keeps_ownership_for_managers(hub: Hub, client: httpx.AsyncClient) -> None:
    ids = await world(hub)
    client.headers["x-csrf-token"] = await sign_in(client, "alice", "user-password-1")
    html = {"accept": "text/html"}
    page = await client.get(f"/contacts/{ids['ada']}/edit", headers=html)
    assert page.status_code == 200
    assert '<select id="ow"' not in page.text and 'name="owner" value=""' in page.text
    form = {"kind": "person", "name": "Ada", "company": "Acme", "phones": ADA}
    taken = await client.post(f"/contacts/{ids['ada']}/edit", data={**form, "owner": "alice"}, headers=html)
    assert taken.status_code == 403
    assert "only a manager or an admin can set or change" in taken.text.replace("&#39;", "'")
    moved = await client.post(
        f"/contacts/{ids['ada']}/edit", data={**form, "company": "Bobco", "owner": ""}, headers=html
    )
    assert moved.status_code == 403
    created = await client.post(
        "/contacts/new",
        data={"kind": "person", "name": "Mine", "phones": ADA, "owner": "alice"},
        headers=html,
    )
    assert created.status_code == 403
    saved = await client.post(
        f"/contacts/{ids['ada']}/edit", data={**form, "notes": "VIP soon", "owner": ""}, headers=html
    )
    assert saved.status_code == 303
    ada = (await client.get(f"/api/v1/contacts/{ids['ada']}")).json()
    assert ada["owner"] is None and ada["notes"] == "VIP soon" and ada["company"]["id"] == ids["acme"]
    assert (await client.get("/api/v1/contacts", params={"q": "Mine"})).json()["items"] == []
    assert (await client.get("/api/v1/calls")).json()["items"] == []


async def test_import_and_extension_mapping_are_not_for_agents(hub: Hub, client: httpx.AsyncClient) -> None:
    await world(hub)
    alice = bearer(await api_token(hub, "alice"))
    csv_file = {"file": ("c.csv", f"Name,Phone,Owner\nAda,{ADA},alice\n".encode(), "text/csv")}
    assert (await client.post("/api/v1/contacts/import", files=csv_file, headers=alice)).status_code == 403
    mapped = await client.put("/api/v1/extensions/main/1009", json={"user": "alice"}, headers=alice)
    assert mapped.status_code == 403
    client.headers["x-csrf-token"] = await sign_in(client, "alice", "user-password-1")
    html = {"accept": "text/html"}
    page_import = await client.post("/contacts/import", files=csv_file, headers=html)
    assert page_import.status_code == 403
    page_map = await client.post(
        "/settings/extensions", data={"pbx": "main", "extension": "1009", "user": "alice"}, headers=html
    )
    assert page_map.status_code == 403
    assert (await client.get("/api/v1/calls")).json()["items"] == []
