"""Odoo: partners and leads into the directory, calls onto their chatter, over JSON-RPC (≤ 18)
and JSON-2 (19)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from tests.conftest import add_user
from tests.crm.conftest import T0, call_events, push_all

from callbridge.crm.odoo import OdooConnector
from callbridge.crm.odoo_simulator import OdooSimulator
from callbridge.domain.connectors import CallPush, ConnectorKind
from callbridge.domain.errors import Forbidden
from callbridge.domain.events import Direction, Disposition, RecordingAvailable
from callbridge.domain.tasks import TaskStatus
from callbridge.domain.users import Role, User
from callbridge.hub import Hub
from callbridge.services.directory import lookup
from callbridge.store.directory import SqlExtensions
from callbridge.store.tasks import tasks


async def add_odoo(hub: Hub, sim: OdooSimulator, key: str = "odoo-key") -> int:
    async with hub.db.unit() as repos:
        record = await repos.connectors.add(
            "books",
            ConnectorKind.ODOO,
            sim.base_url,
            {"database": "acme", "username": "bot@acme.test"},
            {"api_key": key},
        )
    return record.id


def seed(sim: OdooSimulator) -> dict[str, int]:
    maria = sim.add_user("maria@acme.test", "maria-key", name="maria")
    vip = sim.add("res.partner.category", {"name": "VIP"})["id"]
    acme = sim.add("res.partner", {"name": "Acme SA", "is_company": True, "phone": "+33 1 42 68 53 00"})["id"]
    ada = sim.add(
        "res.partner",
        {
            "name": "Ada Lovelace",
            "parent_id": acme,
            "mobile": "+1 415 555 0100",
            "email": "ada@acme.test",
            "user_id": maria,
            "category_id": [vip],
        },
    )["id"]
    lead = sim.add("crm.lead", {"name": "Big deal", "contact_name": "Grace Hopper", "phone": "+14155550142"})[
        "id"
    ]
    return {"maria": maria, "acme": acme, "ada": ada, "lead": lead}


async def test_simulator_is_strict(odoo: OdooSimulator) -> None:
    async with httpx.AsyncClient(base_url=odoo.base_url) as client:
        login = await client.post(
            "/jsonrpc",
            json={
                "jsonrpc": "2.0",
                "method": "call",
                "id": 1,
                "params": {
                    "service": "common",
                    "method": "login",
                    "args": ["acme", "bot@acme.test", "odoo-key"],
                },
            },
        )
        uid = login.json()["result"]
        bad_field = await client.post(
            "/jsonrpc",
            json={
                "jsonrpc": "2.0",
                "method": "call",
                "id": 2,
                "params": {
                    "service": "object",
                    "method": "execute_kw",
                    "args": [
                        "acme",
                        uid,
                        "odoo-key",
                        "res.partner",
                        "search_read",
                        [[]],
                        {"fields": ["phone_mobile"]},
                    ],
                },
            },
        )
        assert bad_field.status_code == 200
        assert bad_field.json()["error"]["data"]["name"] == "builtins.ValueError"
        wrong_key = await client.post(
            "/jsonrpc",
            json={
                "jsonrpc": "2.0",
                "method": "call",
                "id": 3,
                "params": {
                    "service": "object",
                    "method": "execute_kw",
                    "args": ["acme", uid, "nope", "res.partner", "search_read", [[]], {}],
                },
            },
        )
        assert wrong_key.json()["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"
        # JSON-2 exists from Odoo 19 only.
        assert (await client.post("/json/2/res.partner/search_read", json={})).status_code == 404


async def test_test_connection_says_what_is_wrong(hub: Hub, odoo: OdooSimulator) -> None:
    assert hub.connectors is not None
    await add_odoo(hub, odoo, key="wrong")
    checks = await hub.connectors.test("books")
    assert [c.ok for c in checks] == [True, False]
    assert "database 'acme', user 'bot@acme.test' or the API key is wrong" in checks[1].detail

    odoo.add_user("clerk@acme.test", "clerk-key", read={"res.partner", "mail.activity"})
    clerk = OdooConnector(odoo.base_url, "acme", "clerk@acme.test", "clerk-key")
    checks = await clerk.test()
    await clerk.aclose()
    assert {c.what: c.detail for c in checks if not c.ok} == {
        "read crm.lead": "the API user may not read crm.lead"
    }


async def test_sync_partners_and_leads(hub: Hub, odoo: OdooSimulator) -> None:
    assert hub.connectors is not None
    await add_user(hub, "maria", Role.AGENT)
    ids = seed(odoo)
    await add_odoo(hub, odoo)
    report = await hub.connectors.sync("books")
    assert report.full and report.created == 3
    async with hub.db.unit() as repos:
        match = await lookup(repos.directory, "+14155550100", "US")
        assert match.contact is not None and match.company is not None
        assert (match.contact.name, match.company.name) == ("Ada Lovelace", "Acme SA")
        ada = await repos.directory.get(match.contact.id)
        maria = await repos.users.get_by_name("maria")
        assert maria is not None
        assert (ada.tags, ada.email, ada.owner_id) == (("VIP",), "ada@acme.test", maria.user.id)
        refs = await repos.connectors.externals_of_contacts([ada.id])
        assert refs[ada.id][0].url == f"{odoo.base_url}/web#id={ids['ada']}&model=res.partner&view_type=form"
        assert (await lookup(repos.directory, "+14155550142", "US")).display_name == "Grace Hopper"
    # Archived in Odoo: removed at the next (incremental) sync.
    odoo.write("res.partner", ids["ada"], active=False)
    report = await hub.connectors.sync("books")
    assert not report.full and report.removed == 1
    async with hub.db.unit() as repos:
        assert (await lookup(repos.directory, "+14155550100", "US")).contact is None


async def test_missed_call_posts_on_chatter_and_makes_a_call_activity(hub: Hub, odoo: OdooSimulator) -> None:
    assert hub.connectors is not None
    ids = seed(odoo)
    await add_odoo(hub, odoo)
    await hub.connectors.sync("books")
    await hub.handle_events(call_events("m1", "+14155550100", outcome=Disposition.MISSED))
    await hub.handle_events(call_events("m2", "+14155550142"))  # the lead, answered
    await push_all(hub)
    messages = odoo.rows("mail.message")
    on_ada = [m for m in messages if (m["model"], m["res_id"]) == ("res.partner", ids["ada"])]
    assert len(on_ada) == 1
    assert "Incoming call</b> from +14155550100: missed" in on_ada[0]["body"]
    assert "[callbridge-1]" in on_ada[0]["body"] and on_ada[0]["subtype_xmlid"] == "mail.mt_note"
    on_lead = [m for m in messages if (m["model"], m["res_id"]) == ("crm.lead", ids["lead"])]
    assert len(on_lead) == 1 and "answered" in on_lead[0]["body"] and "Duration: 1:00" in on_lead[0]["body"]
    (activity,) = odoo.rows("mail.activity")
    call_type = next(t["id"] for t in odoo.rows("mail.activity.type") if t["name"] == "Call")
    assert (activity["res_model"], activity["res_id"], activity["activity_type_id"]) == (
        "res.partner",
        ids["ada"],
        call_type,
    )
    assert activity["user_id"] == ids["maria"] and activity["date_deadline"] == "2026-03-02"
    async with hub.db.unit() as repos:
        refs = await repos.connectors.externals_of_call(1)
    assert refs[0].id == f"mail.message/{on_ada[0]['id']}" and refs[0].kind is ConnectorKind.ODOO


async def test_a_retry_never_posts_twice(odoo: OdooSimulator) -> None:
    ids = seed(odoo)
    connector = OdooConnector(odoo.base_url, "acme", "bot@acme.test", "odoo-key")
    call = CallPush(
        call_id=7,
        pbx_call_id="x",
        direction="inbound",
        from_number="+14155550100",
        to_number="100",
        external_number="+14155550100",
        started_at=T0,
        answered_at=None,
        ended_at=T0,
        talk_seconds=0,
        disposition="missed",
        links=(f"res.partner/{ids['ada']}",),
    )
    first = await connector.push(call, "")
    second = await connector.push(call, first.ext_id)  # the answer to the first was lost
    await connector.aclose()
    assert first.ext_id == second.ext_id
    assert len(odoo.rows("mail.message")) == 1 and len(odoo.rows("mail.activity")) == 1


@pytest.mark.parametrize("version", [19])
async def test_odoo_19_over_json2(hub: Hub, version: int) -> None:
    assert hub.connectors is not None
    sim = OdooSimulator(version=version, database="acme")
    sim.add_user("bot@acme.test", "odoo-key")
    ids = seed(sim)
    await sim.start()
    try:
        await add_odoo(hub, sim)
        await hub.connectors.sync("books")
        await hub.handle_events(call_events("j1", "+14155550100"))
        await push_all(hub)
    finally:
        await sim.stop()
    assert [m["res_id"] for m in sim.rows("mail.message")] == [ids["ada"]]
    assert ("res.partner", "message_post") in sim.calls


async def test_partner_deleted_meanwhile_is_said_and_not_retried(hub: Hub, odoo: OdooSimulator) -> None:
    assert hub.connectors is not None
    ids = seed(odoo)
    await add_odoo(hub, odoo)
    await hub.connectors.sync("books")
    odoo.unlink("res.partner", ids["ada"])
    await hub.handle_events(call_events("g1", "+14155550100"))
    await push_all(hub)
    async with hub.db.unit() as repos:
        status = (await repos.connectors.statuses())[0]
        from sqlalchemy import select

        from callbridge.store.connectors import connector_calls

        note = (await repos.session.execute(select(connector_calls.c.last_error))).scalar_one()
    assert status.calls_waiting == 0 and odoo.rows("mail.message") == []
    assert note == f"not written: res.partner/{ids['ada']} was deleted in Odoo"


# -- the "Call" activity is done when the callback task closes ----------------------------------


async def _callback_world(hub: Hub, odoo: OdooSimulator) -> tuple[dict[str, int], User]:
    assert hub.connectors is not None
    ids = seed(odoo)
    await add_odoo(hub, odoo)
    await hub.connectors.sync("books")
    ann = await add_user(hub, "ann", Role.AGENT)
    async with hub.db.session() as s:
        await SqlExtensions(s).map("main", "100", ann.id)  # her phone rang: the callback is hers
        await s.commit()
    await hub.handle_events(call_events("m1", "+14155550100", outcome=Disposition.MISSED))
    await push_all(hub)
    assert len(odoo.rows("mail.activity")) == 1
    return ids, ann


async def test_a_callback_call_marks_the_call_activity_done_once(hub: Hub, odoo: OdooSimulator) -> None:
    ids, _ = await _callback_world(hub, odoo)
    later = T0 + timedelta(minutes=20)
    await hub.handle_events(
        call_events("cb1", "+14155550100", direction=Direction.OUTBOUND, extension="100", at=later)
    )
    await push_all(hub)
    assert odoo.rows("mail.activity") == []
    ((done, feedback),) = odoo.done_activities
    assert (done["res_model"], done["res_id"]) == ("res.partner", ids["ada"]) and "callbridge" in feedback
    assert ("mail.activity", "action_feedback") in odoo.calls
    # Once: the missed call changing again (or another push) does nothing more.
    async with hub.db.unit() as repos:
        await repos.connectors.enqueue_calls([1])
    await push_all(hub)
    assert len(odoo.done_activities) == 1
    on_ada = [
        m for m in odoo.rows("mail.message") if m["res_id"] == ids["ada"] and "[callbridge-1]" in m["body"]
    ]
    assert len(on_ada) == 1


async def test_a_task_closed_by_hand_while_odoo_is_down_marks_it_done_when_odoo_is_back(
    hub: Hub, odoo: OdooSimulator
) -> None:
    assert hub.followups is not None
    _, ann = await _callback_world(hub, odoo)
    async with hub.db.unit() as repos:
        task_id = (await repos.session.execute(select(tasks.c.id))).scalar_one()
        await hub.followups.update(task_id, ann, hub.followup_store(repos), status=TaskStatus.DONE)
    odoo.down = True
    assert hub.connectors is not None
    assert await hub.connectors.pusher.run_once() == 1  # tried, failed: kept in the outbox
    assert len(odoo.rows("mail.activity")) == 1
    async with hub.db.unit() as repos:
        assert (await repos.connectors.statuses())[0].calls_waiting == 1
    odoo.down = False
    await push_all(hub)
    assert odoo.rows("mail.activity") == [] and len(odoo.done_activities) == 1


async def test_an_agent_who_owns_nothing_cannot_close_someone_elses_callback(
    hub: Hub, odoo: OdooSimulator
) -> None:
    assert hub.followups is not None
    await _callback_world(hub, odoo)
    nobody = await add_user(hub, "nobody", Role.AGENT)
    async with hub.db.unit() as repos:
        task_id = (await repos.session.execute(select(tasks.c.id))).scalar_one()
        with pytest.raises(Forbidden):
            await hub.followups.update(task_id, nobody, hub.followup_store(repos), status=TaskStatus.DONE)
    await push_all(hub)
    assert len(odoo.rows("mail.activity")) == 1 and odoo.done_activities == []


async def test_a_late_recording_posts_nothing_new_on_the_chatter(hub: Hub, odoo: OdooSimulator) -> None:
    assert hub.connectors is not None
    ids = seed(odoo)
    await add_odoo(hub, odoo)
    await hub.connectors.sync("books")
    await hub.handle_events(call_events("r1", "+14155550100"))
    await push_all(hub)
    await hub.handle_events(
        [RecordingAvailable(pbx="main", call_id="r1", at=T0 + timedelta(minutes=2), recording="r.wav")]
    )
    await push_all(hub)  # announced, not fetched yet
    async with hub.db.unit() as repos:
        (pending,) = await repos.recordings.for_call(1)
        await repos.recordings.mark_ready(
            pending.id,
            storage_key="main/r.wav",
            size_bytes=4,
            sha256="0" * 64,
            content_type="audio/wav",
            duration_seconds=60.0,
        )
    posts_before = odoo.calls.count(("res.partner", "message_post"))
    await push_all(hub)
    on_ada = [m for m in odoo.rows("mail.message") if m["res_id"] == ids["ada"]]
    assert len(on_ada) == 1 and posts_before == 1
    assert odoo.calls.count(("res.partner", "message_post")) == 1
    async with hub.db.unit() as repos:
        assert (await repos.connectors.statuses())[0].calls_waiting == 0
