"""ERPNext: directory from the site, calls into its Call Log, errors said in words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text, update
from tests.conftest import add_user
from tests.crm.conftest import T0, call_events, push_all

from callbridge.crm.base import Check
from callbridge.crm.erpnext import ErpnextConnector
from callbridge.crm.frappe_simulator import FrappeSimulator
from callbridge.domain.connectors import ConnectorKind
from callbridge.domain.events import Direction, Disposition, RecordingAvailable
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.directory import lookup
from callbridge.store.connectors import connector_calls
from callbridge.store.directory import SqlExtensions
from callbridge.store.tables import users


async def add_erpnext(hub: Hub, sim: FrappeSimulator, secret: str = "secret1") -> int:
    async with hub.db.unit() as repos:
        record = await repos.connectors.add(
            "erp", ConnectorKind.ERPNEXT, sim.base_url, {}, {"api_key": "key1", "api_secret": secret}
        )
    return record.id


def seed(sim: FrappeSimulator) -> None:
    sim.add_record(
        "Customer",
        {
            "name": "Acme Ltd",
            "customer_name": "Acme Ltd",
            "customer_type": "Company",
            "mobile_no": "+1 415 555 0199",
        },
    )
    sim.add_record(
        "Contact",
        {
            "name": "Ada Lovelace-Acme Ltd",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email_id": "ada@acme.test",
            "phone_nos": [{"phone": "(415) 555-0100", "is_primary_phone": 1}],
            "links": [{"link_doctype": "Customer", "link_name": "Acme Ltd"}],
        },
    )
    sim.add_record(
        "Lead",
        {
            "name": "CRM-LEAD-0001",
            "lead_name": "Grace Hopper",
            "mobile_no": "+14155550142",
            "lead_owner": "Administrator",
        },
    )


# -- the simulator refuses what a Frappe site refuses ----------------------------------------------


async def test_simulator_is_strict_about_auth_fields_and_select_values(frappe: FrappeSimulator) -> None:
    seed(frappe)
    async with httpx.AsyncClient(base_url=frappe.base_url) as client:
        bearer = await client.get("/api/resource/Contact", headers={"Authorization": "Bearer key1:secret1"})
        assert bearer.status_code == 401
        no_colon = await client.get("/api/resource/Contact", headers={"Authorization": "token key1"})
        assert no_colon.status_code == 401
        good = {"Authorization": "token key1:secret1"}
        wrong_field = await client.get(
            "/api/resource/Contact", params={"fields": '["name","phone_number"]'}, headers=good
        )
        assert wrong_field.status_code == 417
        assert "phone_number" in wrong_field.json()["exception"]
        bad_status = await client.post(
            "/api/resource/Call%20Log",
            json={"id": "x1", "type": "Incoming", "status": "Answered"},
            headers=good,
        )
        assert bad_status.status_code == 417
        assert "Answered" in bad_status.json()["_server_messages"]
        child = await client.get("/api/resource/Contact%20Phone", headers=good)
        assert child.status_code == 403


# -- test connection ------------------------------------------------------------------------------


async def test_test_connection_says_what_is_wrong(hub: Hub, frappe: FrappeSimulator) -> None:
    assert hub.connectors is not None
    await add_erpnext(hub, frappe, secret="wrong")
    checks = await hub.connectors.test("erp")
    assert [c.ok for c in checks] == [False]
    assert "refused the credentials" in checks[0].detail

    frappe.add_key("key2", "secret2", read={"Contact", "Customer", "Call Log", "Employee", "User"})
    connector = ErpnextConnector(frappe.base_url, "key2", "secret2")
    checks = await connector.test()
    await connector.aclose()
    failed = {c.what: c.detail for c in checks if not c.ok}
    assert failed == {"read Lead": "the API user may not read Lead"}

    closed = ErpnextConnector("http://127.0.0.1:9", "key1", "secret1")
    checks = await closed.test()
    await closed.aclose()
    assert not checks[0].ok and "cannot reach http://127.0.0.1:9" in checks[0].detail


@pytest.mark.parametrize(
    ("unreadable", "expected"),
    [
        (
            {"Employee"},
            {
                "read Employee": "the API user may not read Employee (needed for the Call Log's"
                " call_received_by): calls are written without who took them"
            },
        ),
        (
            {"Employee", "User"},
            {
                "read Employee": "the API user may not read Employee (needed for the Call Log's"
                " call_received_by): calls are written without who took them",
                "read User": "the API user may not read User (needed for the Call Log's"
                " employee_user_id): calls are written without who took them",
            },
        ),
    ],
)
async def test_test_connection_names_employee_and_user_it_may_not_read(
    hub: Hub, frappe: FrappeSimulator, unreadable: set[str], expected: dict[str, str]
) -> None:
    assert hub.connectors is not None
    readable = {"Contact", "Customer", "Lead", "Call Log", "Employee", "User"} - unreadable
    frappe.add_key("key2", "secret2", user="bot@example.com", read=readable)
    async with hub.db.unit() as repos:
        await repos.connectors.add(
            "erp", ConnectorKind.ERPNEXT, frappe.base_url, {}, {"api_key": "key2", "api_secret": "secret2"}
        )
    checks = await hub.connectors.test("erp")
    assert checks[0] == Check("sign in", True, "signed in as bot@example.com")
    assert {c.what: c.detail for c in checks if not c.ok} == expected
    assert {c.what for c in checks if c.ok} == {"sign in"} | {f"read {d}" for d in readable}


# -- directory sync -------------------------------------------------------------------------------


async def test_sync_builds_the_directory_and_follows_changes_and_deletions(
    hub: Hub, frappe: FrappeSimulator
) -> None:
    assert hub.connectors is not None
    seed(frappe)
    connector_id = await add_erpnext(hub, frappe)
    report = await hub.connectors.sync("erp")
    assert report.full and report.created == 3
    async with hub.db.unit() as repos:
        match = await lookup(repos.directory, "+14155550100", "US")
        assert match.contact is not None and match.contact.name == "Ada Lovelace"
        assert match.company is not None and match.company.name == "Acme Ltd"
        refs = await repos.connectors.externals_of_contacts([match.contact.id])
        ref = refs[match.contact.id][0]
        assert ref.as_dict() == {
            "connector": "erp",
            "kind": "erpnext",
            "id": "Contact/Ada Lovelace-Acme Ltd",
            "url": f"{frappe.base_url}/app/contact/Ada%20Lovelace-Acme%20Ltd",
        }
        ada_id = match.contact.id
        lead = await lookup(repos.directory, "+14155550142", "US")
        assert lead.contact is not None and await repos.directory.tags_of(lead.contact.id) == ["Lead"]

    # The ERP wins for its fields: a new number replaces the old; the local notes stay.
    async with hub.db.unit() as repos:
        await repos.session.execute(
            text("UPDATE contacts SET notes = 'likes tea' WHERE id = :i"), {"i": ada_id}
        )
    frappe.update_record(
        "Contact",
        "Ada Lovelace-Acme Ltd",
        phone_nos=[{"phone": "+1 415 555 0111", "is_primary_mobile_no": 1}],
    )
    report = await hub.connectors.sync("erp")
    assert not report.full and report.updated == 1
    async with hub.db.unit() as repos:
        assert (await lookup(repos.directory, "+14155550100", "US")).contact is None
        ada = await repos.directory.get(ada_id)
        assert [p.key for p in ada.phones] == ["+14155550111"] and ada.notes == "likes tea"

    # Deleted in ERPNext: gone from the directory at the next sweep.
    frappe.delete_record("Lead", "CRM-LEAD-0001")
    hub.settings.connector_sweep_seconds = 0.001
    report = await hub.connectors.sync("erp")
    assert report.removed == 1
    async with hub.db.unit() as repos:
        assert (await lookup(repos.directory, "+14155550142", "US")).contact is None
        statuses = await repos.connectors.statuses()
        assert statuses[0].contacts == 2 and statuses[0].record.id == connector_id


async def test_full_sync_pages_and_resumes_by_keyset(hub: Hub, frappe: FrappeSimulator) -> None:
    """Records sharing one modification time (a bulk import) page correctly; a record changed
    mid-sync is read again, none is skipped."""
    assert hub.connectors is not None
    for n in range(23):
        frappe.add_record(
            "Customer",
            {"name": f"C{n:03d}", "customer_name": f"Customer {n}", "mobile_no": f"+1415555{1000 + n}"},
            modified="2026-01-01 00:00:00.000000",
        )
    await add_erpnext(hub, frappe)
    record, connector = await hub.connectors._named("erp")
    seen: list[str] = []
    original = connector.page

    async def page(stream: str, since: str, after: str, limit: int) -> list:  # type: ignore[type-arg]
        rows = await original(stream, since, after, limit)
        seen.extend(r.ext_id for r in rows)
        if stream == "Customer" and len(seen) == 5:
            frappe.update_record("Customer", "C001", customer_name="Customer One")  # behind the cursor
        return rows

    connector.page = page  # type: ignore[method-assign]
    from callbridge.crm.sync import run_sync

    report = await run_sync(connector, record.id, hub.connectors._sync_units, "US", full=True, page_size=5)
    await connector.aclose()
    assert report.created == 23
    assert sorted(set(seen)) == [f"Customer/C{n:03d}" for n in range(23)]
    assert seen.count("Customer/C001") == 2
    async with hub.db.unit() as repos:
        assert (await lookup(repos.directory, "+14155551001", "US")).display_name == "Customer One"


# -- calls into the Call Log ---------------------------------------------------------------------


async def test_call_lands_in_call_log_with_links_once(hub: Hub, frappe: FrappeSimulator) -> None:
    assert hub.connectors is not None
    seed(frappe)
    await add_erpnext(hub, frappe)
    await hub.connectors.sync("erp")
    await hub.handle_events(call_events("c1", "+14155550100")[:2])  # ringing
    await push_all(hub)
    log = frappe.doc("Call Log", "callbridge-1")
    assert log is not None and log["status"] == "Ringing" and log["type"] == "Incoming"
    await hub.handle_events(call_events("c1", "+14155550100")[2:])  # answered, ended
    await push_all(hub)
    log = frappe.doc("Call Log", "callbridge-1")
    assert log is not None
    assert log["status"] == "Completed" and log["duration"] == 60
    assert log["from"] == "+14155550100" and log["to"] == "100"
    assert log["start_time"] == "2026-03-02 09:00:00" and log["end_time"] == "2026-03-02 09:01:05"
    assert [(r["link_doctype"], r["link_name"]) for r in log["links"]] == [
        ("Contact", "Ada Lovelace-Acme Ltd"),
        ("Customer", "Acme Ltd"),
    ]
    assert [w for w in frappe.writes if w[1] == "Call Log"] == [
        ("POST", "Call Log", "callbridge-1"),
        ("PUT", "Call Log", "callbridge-1"),
    ]
    async with hub.db.unit() as repos:
        refs = await repos.connectors.externals_of_call(1)
    assert [r.as_dict() for r in refs] == [
        {
            "connector": "erp",
            "kind": "erpnext",
            "id": "Call Log/callbridge-1",
            "url": f"{frappe.base_url}/app/call-log/callbridge-1",
        }
    ]


async def test_erp_down_then_back_every_call_arrives_once(hub: Hub, frappe: FrappeSimulator) -> None:
    assert hub.connectors is not None
    seed(frappe)
    await add_erpnext(hub, frappe)
    await hub.connectors.sync("erp")
    hub.connectors.pusher.max_backoff = 60.0  # the production-like wait: only a success cuts it short
    frappe.down = True
    for n in range(5):
        await hub.handle_events(call_events(f"d{n}", "+14155550100", outcome=Disposition.MISSED))
    assert await hub.connectors.pusher.run_once() == 5
    async with hub.db.unit() as repos:
        status = (await repos.connectors.statuses())[0]
    assert status.calls_waiting == 5 and status.calls_pushed == 0
    assert "HTML page" in status.record.last_error
    # Nothing is due again before its back-off: no fast loop.
    assert await hub.connectors.pusher.run_once() == 0
    frappe.down = False
    async with hub.db.unit() as repos:
        due = await repos.connectors.next_due_at()
        assert due is not None and due > datetime.now(UTC) + timedelta(seconds=1)
        # One call's back-off runs out: it goes through, and the others follow at once.
        await repos.session.execute(
            update(connector_calls).where(connector_calls.c.call_id == 3).values(next_at=datetime.now(UTC))
        )
    assert await hub.connectors.pusher.run_once() == 1
    await push_all(hub)
    posts = [w for w in frappe.writes if w[0] == "POST" and w[1] == "Call Log"]
    assert sorted(name for _, _, name in posts) == [f"callbridge-{n}" for n in range(1, 6)]
    assert all(frappe.doc("Call Log", f"callbridge-{n}")["status"] == "No Answer" for n in range(1, 6))  # type: ignore[index]
    async with hub.db.unit() as repos:
        status = (await repos.connectors.statuses())[0]
    assert (status.calls_waiting, status.calls_pushed, status.record.last_error) == (0, 5, "")


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (
            {"status": 429, "body": "{}", "content_type": "application/json", "retry_after": "1"},
            "slow down (HTTP 429)",
        ),
        (
            {"status": 500, "body": '{"exc_type": "Boom"}', "content_type": "application/json"},
            "failed (HTTP 500)",
        ),
        (
            {"status": 403, "body": '{"exc_type": "PermissionError"}', "content_type": "application/json"},
            "no permission",
        ),
    ],
)
async def test_bad_answers_keep_the_call_queued_with_words(
    hub: Hub, frappe: FrappeSimulator, fault: dict[str, str], words: str
) -> None:
    assert hub.connectors is not None
    await add_erpnext(hub, frappe)
    await hub.handle_events(call_events("e1", "+14155550177"))
    frappe.fail_next(1, path="Call", **fault)  # type: ignore[arg-type]
    await hub.connectors.pusher.run_once()
    async with hub.db.unit() as repos:
        status = (await repos.connectors.statuses())[0]
        due = await repos.connectors.next_due_at()
    assert status.calls_waiting == 1 and words in status.record.last_error
    assert due is not None
    if fault["status"] == 429:
        # Retry-After is honoured (1 s), beyond the 0.2 s cap of the back-off.
        assert due > datetime.now(UTC) + timedelta(seconds=0.5)
    else:
        assert due < datetime.now(UTC) + timedelta(seconds=0.5)
    await push_all(hub)
    assert frappe.doc("Call Log", "callbridge-1") is not None


async def test_deleted_link_writes_the_call_without_it(hub: Hub, frappe: FrappeSimulator) -> None:
    assert hub.connectors is not None
    seed(frappe)
    await add_erpnext(hub, frappe)
    await hub.connectors.sync("erp")
    frappe.delete_record("Contact", "Ada Lovelace-Acme Ltd")  # deleted in ERPNext before the next sync
    await hub.handle_events(call_events("x1", "+14155550100"))
    await push_all(hub)
    log = frappe.doc("Call Log", "callbridge-1")
    assert log is not None and log["links"] == []
    async with hub.db.unit() as repos:
        status = (await repos.connectors.statuses())[0]
    assert status.calls_pushed == 1


async def test_a_write_whose_answer_was_lost_is_not_duplicated(hub: Hub, frappe: FrappeSimulator) -> None:
    """The ERP stored the Call Log but the answer never came: the retry updates it (409 → PUT)."""
    assert hub.connectors is not None
    await add_erpnext(hub, frappe)
    frappe.add_record(
        "Call Log", {"name": "callbridge-1", "id": "callbridge-1", "type": "Incoming", "status": "Ringing"}
    )
    await hub.handle_events(call_events("l1", "+14155550177"))
    await push_all(hub)
    assert len(frappe.tables["Call Log"].rows) == 1
    assert frappe.doc("Call Log", "callbridge-1")["status"] == "Completed"  # type: ignore[index]


async def test_a_slow_erp_is_said_as_such(frappe: FrappeSimulator) -> None:
    frappe.delay = 0.5
    connector = ErpnextConnector(
        frappe.base_url, "key1", "secret1", client=httpx.AsyncClient(timeout=httpx.Timeout(0.1))
    )
    checks = await connector.test()
    await connector.aclose()
    assert (
        not checks[0].ok
        and "no answer from http://127.0.0.1" in checks[0].detail
        and "in time" in checks[0].detail
    )


async def test_incremental_sync_links_earlier_calls_of_a_new_contact(
    hub: Hub, frappe: FrappeSimulator
) -> None:
    assert hub.connectors is not None
    await add_erpnext(hub, frappe)
    await hub.connectors.sync("erp")  # the first (full) sync: nothing yet
    await hub.handle_events(call_events("early", "+14155550177"))
    frappe.add_record(
        "Contact",
        {
            "name": "Newcomer",
            "first_name": "New",
            "last_name": "Comer",
            "phone_nos": [{"phone": "+14155550177"}],
        },
    )
    await hub.connectors.sync("erp")
    async with hub.db.unit() as repos:
        call = await repos.calls.find(1)
    assert call is not None and call.contact is not None and call.contact.name == "New Comer"


# -- who answered: callbridge user → ERPNext User and Employee ------------------------------------


async def _agent(hub: Hub, name: str, extension: str, email: str = "") -> None:
    user = await add_user(hub, name, Role.AGENT)
    async with hub.db.session() as s:
        await SqlExtensions(s).map("main", extension, user.id)
        await s.execute(update(users).where(users.c.id == user.id).values(email=email))
        await s.commit()


async def test_call_log_names_the_employee_who_answered_and_who_placed(
    hub: Hub, frappe: FrappeSimulator
) -> None:
    assert hub.connectors is not None
    await add_erpnext(hub, frappe)
    frappe.add_record("User", {"name": "ann@acme.test", "full_name": "Ann", "enabled": 1})
    frappe.add_record(
        "Employee", {"name": "HR-EMP-00007", "employee_name": "Ann", "user_id": "ann@acme.test"}
    )
    frappe.add_record("User", {"name": "bob@acme.test", "full_name": "Bob", "enabled": 1})  # no Employee
    await _agent(hub, "ann", "100", "Ann@Acme.test")
    await _agent(hub, "bob", "101", "bob@acme.test")
    await hub.handle_events(call_events("in1", "+14155550100", extension="100"))
    await hub.handle_events(
        call_events(
            "out1",
            "+14155550111",
            extension="101",
            direction=Direction.OUTBOUND,
            at=T0 + timedelta(minutes=5),
        )
    )
    await push_all(hub)
    answered = frappe.doc("Call Log", "callbridge-1")
    placed = frappe.doc("Call Log", "callbridge-2")
    assert answered is not None and placed is not None
    assert (answered["call_received_by"], answered["employee_user_id"]) == ("HR-EMP-00007", "ann@acme.test")
    assert placed["type"] == "Outgoing"
    assert (placed.get("call_received_by"), placed["employee_user_id"]) == (None, "bob@acme.test")


async def test_a_user_unknown_to_erpnext_leaves_the_fields_empty_and_the_call_is_written(
    hub: Hub, frappe: FrappeSimulator
) -> None:
    assert hub.connectors is not None
    await add_erpnext(hub, frappe)
    await _agent(hub, "zed@acme.test", "100")  # a callbridge user named by an address ERPNext lacks
    await _agent(hub, "nobody", "102")  # owns nothing, no address
    await hub.handle_events(call_events("u1", "+14155550100", extension="100"))
    await hub.handle_events(call_events("u2", "+14155550101", extension="102", at=T0 + timedelta(minutes=3)))
    await push_all(hub)
    for name in ("callbridge-1", "callbridge-2"):
        log = frappe.doc("Call Log", name)
        assert log is not None and log["status"] == "Completed"
        assert not log.get("call_received_by") and not log.get("employee_user_id")
    async with hub.db.unit() as repos:
        status = (await repos.connectors.statuses())[0]
    assert status.calls_pushed == 2 and status.calls_waiting == 0


async def test_an_employee_deleted_after_it_was_looked_up_does_not_block_the_call(
    hub: Hub, frappe: FrappeSimulator
) -> None:
    assert hub.connectors is not None
    await add_erpnext(hub, frappe)
    frappe.add_record("User", {"name": "ann@acme.test", "full_name": "Ann", "enabled": 1})
    frappe.add_record(
        "Employee", {"name": "HR-EMP-00007", "employee_name": "Ann", "user_id": "ann@acme.test"}
    )
    await _agent(hub, "ann", "100", "ann@acme.test")
    await hub.handle_events(call_events("d1", "+14155550100", extension="100"))
    await push_all(hub)
    frappe.tables["Employee"].delete("HR-EMP-00007")  # the lookup is cached; the Link now fails
    await hub.handle_events(call_events("d2", "+14155550100", extension="100", at=T0 + timedelta(minutes=3)))
    await push_all(hub)
    log = frappe.doc("Call Log", "callbridge-2")
    assert log is not None and log["status"] == "Completed" and not log.get("call_received_by")


async def test_simulator_refuses_a_call_log_linking_a_missing_employee(frappe: FrappeSimulator) -> None:
    async with httpx.AsyncClient(base_url=frappe.base_url) as client:
        answer = await client.post(
            "/api/resource/Call%20Log",
            headers={"Authorization": "token key1:secret1"},
            json={"id": "x-1", "type": "Incoming", "status": "Ringing", "call_received_by": "HR-EMP-404"},
        )
    assert answer.status_code == 417
    assert answer.json()["exc_type"] == "LinkValidationError"
    assert "Could not find Call Received By: HR-EMP-404" in answer.text


async def test_without_a_mapping_what_erpnext_filled_in_itself_is_kept(
    hub: Hub, frappe: FrappeSimulator
) -> None:
    """ERPNext sets call_received_by itself (by Employee.cell_number); an update by callbridge,
    which knows nobody for the call, leaves it alone."""
    assert hub.connectors is not None
    await add_erpnext(hub, frappe)
    frappe.add_record("Employee", {"name": "HR-EMP-00009", "employee_name": "Desk", "cell_number": "100"})
    frappe.add_record(
        "Call Log",
        {
            "name": "callbridge-1",
            "id": "callbridge-1",
            "type": "Incoming",
            "status": "Ringing",
            "call_received_by": "HR-EMP-00009",
        },
    )
    await hub.handle_events(call_events("k1", "+14155550177"))
    await push_all(hub)
    log = frappe.doc("Call Log", "callbridge-1")
    assert log is not None and log["status"] == "Completed" and log["call_received_by"] == "HR-EMP-00009"


# -- a recording that arrives after the call was written ------------------------------------------


async def _late_recording(hub: Hub, call_key: str) -> None:
    """The recording of a written call is stored (fetched from the PBX or uploaded by an agent)."""
    await hub.handle_events(
        [RecordingAvailable(pbx="main", call_id=call_key, at=T0 + timedelta(minutes=2), recording="r.wav")]
    )
    await push_all(hub)  # the call changed (its recording announced): written, no link yet
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


async def test_a_late_recording_updates_the_call_log_with_its_link(hub: Hub, frappe: FrappeSimulator) -> None:
    assert hub.connectors is not None
    await add_erpnext(hub, frappe)
    await hub.handle_events(call_events("r1", "+14155550100"))
    await push_all(hub)
    log = frappe.doc("Call Log", "callbridge-1")
    assert log is not None and log["status"] == "Completed" and not log["recording_url"]
    await _late_recording(hub, "r1")
    log = frappe.doc("Call Log", "callbridge-1")
    assert log is not None and not log["recording_url"]
    async with hub.db.unit() as repos:
        assert (await repos.connectors.statuses())[0].calls_waiting == 1  # queued again
    await push_all(hub)
    log = frappe.doc("Call Log", "callbridge-1")
    assert log is not None and log["recording_url"].startswith("https://hub.example.com/shared/")
    assert len(frappe.tables["Call Log"].rows) == 1
    assert [w[0] for w in frappe.writes if w[1] == "Call Log"] == ["POST", "PUT", "PUT"]
