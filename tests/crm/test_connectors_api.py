"""The connectors' API (admin) and the `external` links on calls and contacts."""

from __future__ import annotations

import httpx
from tests.conftest import add_user, api_token
from tests.crm.conftest import call_events, push_all
from tests.crm.test_erpnext import seed

from callbridge.crm.frappe_simulator import FrappeSimulator
from callbridge.domain.users import Role
from callbridge.hub import Hub

KEYS = {"name", "kind", "state", "last_sync_at", "contacts", "calls_pushed", "calls_waiting", "last_error"}


async def test_connectors_end_to_end_over_the_api(
    admin_client: httpx.AsyncClient, hub: Hub, frappe: FrappeSimulator
) -> None:
    assert hub.connectors is not None
    assert (await admin_client.get("/api/v1/connectors")).json() == []
    body = {
        "kind": "erpnext",
        "name": "erp",
        "url": frappe.base_url,
        "api_key": "key1",
        "api_secret": "secret1",
    }
    created = await admin_client.post("/api/v1/connectors", json=body)
    assert created.status_code == 201, created.text
    again = await admin_client.post("/api/v1/connectors", json=body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    bad = await admin_client.post("/api/v1/connectors", json={**body, "name": "x", "url": "erp.example.com"})
    assert bad.status_code == 400 and "http://" in bad.json()["error"]["message"]
    no_secret = await admin_client.post("/api/v1/connectors", json={**body, "name": "y", "api_secret": ""})
    assert no_secret.status_code == 400 and "secret" in no_secret.json()["error"]["message"]

    test = (await admin_client.post("/api/v1/connectors/erp/test")).json()
    assert test["ok"] is True and test["checks"][0]["what"] == "sign in"
    assert (await admin_client.post("/api/v1/connectors/nope/test")).status_code == 404

    seed(frappe)
    await hub.connectors.sync("erp")
    contacts = (await admin_client.get("/api/v1/contacts", params={"q": "Ada"})).json()["items"]
    assert contacts[0]["external"] == [
        {
            "connector": "erp",
            "kind": "erpnext",
            "id": "Contact/Ada Lovelace-Acme Ltd",
            "url": f"{frappe.base_url}/app/contact/Ada%20Lovelace-Acme%20Ltd",
        }
    ]
    one = (await admin_client.get(f"/api/v1/contacts/{contacts[0]['id']}")).json()
    assert one["external"] == contacts[0]["external"]

    await hub.handle_events(call_events("api1", "+14155550100"))
    call = (await admin_client.get("/api/v1/calls/1")).json()
    assert call["external"] == []  # not written yet
    await push_all(hub)
    call = (await admin_client.get("/api/v1/calls/1")).json()
    assert call["external"] == [
        {
            "connector": "erp",
            "kind": "erpnext",
            "id": "Call Log/callbridge-1",
            "url": f"{frappe.base_url}/app/call-log/callbridge-1",
        }
    ]
    (status,) = (await admin_client.get("/api/v1/connectors")).json()
    assert set(status) == KEYS
    assert (status["name"], status["kind"], status["state"], status["contacts"]) == (
        "erp",
        "erpnext",
        "ok",
        3,
    )
    assert (status["calls_pushed"], status["calls_waiting"], status["last_error"]) == (1, 0, "")
    assert status["last_sync_at"] is not None

    assert (await admin_client.delete("/api/v1/connectors/erp")).status_code == 204
    assert (await admin_client.get("/api/v1/connectors")).json() == []


async def test_agent_who_owns_nothing_sees_no_connector_and_no_call(
    client: httpx.AsyncClient, hub: Hub, frappe: FrappeSimulator
) -> None:
    await add_user(hub, "newbie", Role.AGENT)
    token = await api_token(hub, "newbie")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/connectors", headers=headers)).status_code == 403
    assert (await client.post("/api/v1/connectors/erp/test", headers=headers)).status_code == 403
    await hub.handle_events(call_events("p1", "+14155550100"))
    assert (await client.get("/api/v1/calls/1", headers=headers)).status_code == 404


async def test_pages_and_pop_card_open_the_erp_record(
    admin_client: httpx.AsyncClient, hub: Hub, frappe: FrappeSimulator
) -> None:
    assert hub.connectors is not None
    seed(frappe)
    page = await admin_client.get("/settings/connectors")
    assert page.status_code == 200 and "No connector yet" in page.text
    csrf = admin_client.headers["x-csrf-token"]
    added = await admin_client.post(
        "/settings/connectors",
        data={
            "csrf_token": csrf,
            "kind": "erpnext",
            "name": "erp",
            "url": frappe.base_url,
            "api_key": "key1",
            "api_secret": "nope",
        },
    )
    assert added.status_code == 303
    tested = await admin_client.post("/settings/connectors/erp/test", data={"csrf_token": csrf})
    assert "refused the credentials" in tested.text and "something is wrong" in tested.text
    async with hub.db.unit() as repos:
        await repos.connectors.remove("erp")
        from callbridge.domain.connectors import ConnectorKind

        await repos.connectors.add(
            "erp", ConnectorKind.ERPNEXT, frappe.base_url, {}, {"api_key": "key1", "api_secret": "secret1"}
        )
    await hub.connectors.sync("erp")

    agent = await add_user(hub, "ana", Role.AGENT)
    async with hub.db.unit() as repos:
        await repos.extensions.map("main", "100", agent.id)
    await hub.handle_events(call_events("pop1", "+14155550100")[:2])  # ringing at ana's phone
    cards = await hub.board.cards(agent.id)
    contact_url = f"{frappe.base_url}/app/contact/Ada%20Lovelace-Acme%20Ltd"
    assert any([e["url"] for e in card.get("external", [])] == [contact_url] for card in cards), cards
    await hub.handle_events(call_events("pop1", "+14155550100")[2:])
    await push_all(hub)

    call_page = await admin_client.get("/calls/1")
    assert f'href="{frappe.base_url}/app/call-log/callbridge-1"' in call_page.text
    assert "Open in ERPNext" in call_page.text and "Open contact in ERPNext" in call_page.text
    contact_id = (await admin_client.get("/api/v1/contacts", params={"q": "Ada"})).json()["items"][0]["id"]
    contact_page = await admin_client.get(f"/contacts/{contact_id}")
    assert f'href="{contact_url}"' in contact_page.text
    listing = await admin_client.get("/settings/connectors")
    assert "Calls written" in listing.text and ">3</td>" in listing.text
