"""Call log over HTTP: fields, filters, pagination, roles, CSV, pages, and 4xx on bad input."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
from tests.conftest import add_user, api_token

from callbridge.domain.directory import ContactKind, phone_from_input
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    HangupSide,
    RecordingAvailable,
    TransferKind,
)
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.calllog import ingest
from callbridge.services.csv_export import FORMULA_STARTS
from callbridge.services.directory import ContactInput
from callbridge.store.calls import SqlCalls
from callbridge.store.directory import SqlDirectory, SqlExtensions

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


async def feed(hub: Hub, events: list[CallEvent]) -> None:
    for event in events:
        async with hub.db.session() as s:
            await ingest(event, SqlCalls(s), SqlDirectory(s), SqlExtensions(s), "US")


def inbound(
    call_id: str, number: str, minute: int, answered_by: str = "", recording: str = ""
) -> list[CallEvent]:
    at = T0 + timedelta(minutes=minute)
    events: list[CallEvent] = [
        CallStarted(
            pbx="main",
            call_id=call_id,
            at=at,
            direction=Direction.INBOUND,
            from_number=number,
            to_number="+14155559999",
            from_name="CALLER",
        )
    ]
    if answered_by:
        events += [
            CallAnswered(pbx="main", call_id=call_id, at=at + timedelta(seconds=6), extension=answered_by),
            CallTransferred(
                pbx="main",
                call_id=call_id,
                at=at + timedelta(seconds=20),
                transfer=TransferKind.ATTENDED,
                from_extension=answered_by,
                to="1009",
            ),
            CallEnded(
                pbx="main",
                call_id=call_id,
                at=at + timedelta(seconds=96),
                disposition=Disposition.ANSWERED,
                hangup_side=HangupSide.CALLER,
            ),
        ]
    else:
        events.append(
            CallEnded(
                pbx="main", call_id=call_id, at=at + timedelta(seconds=30), disposition=Disposition.MISSED
            )
        )
    if recording:
        events.append(
            RecordingAvailable(
                pbx="main", call_id=call_id, at=at + timedelta(seconds=97), recording=recording
            )
        )
    return events


async def world(hub: Hub) -> dict[str, int]:
    alice = await add_user(hub, "alice", Role.AGENT)
    bob = await add_user(hub, "bob", Role.AGENT)
    await add_user(hub, "mgr", Role.MANAGER)
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        acme = await d.create(ContactInput(ContactKind.COMPANY, "Acme"))
        ada = await d.create(
            ContactInput(
                ContactKind.PERSON,
                "Ada",
                company_id=acme,
                phones=(phone_from_input("+14155550100", "US"),),
                tags=("VIP",),
                owner_id=bob.id,
            )
        )
        carl = await d.create(
            ContactInput(
                ContactKind.PERSON, "Carl", company_id=acme, phones=(phone_from_input("+14155550101", "US"),)
            )
        )
        await SqlExtensions(s).map("main", "1001", alice.id)
    await feed(hub, inbound("a1", "+14155550100", 1, answered_by="1001", recording="rec/a1.wav"))
    await feed(hub, inbound("a2", "+14155550101", 2))
    await feed(hub, inbound("a3", "+4930123456", 3, answered_by="1002"))
    return {"acme": acme, "ada": ada, "carl": carl, "alice": alice.id, "bob": bob.id}


async def test_list_has_every_field(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    ids = await world(hub)
    body = (await admin_client.get("/api/v1/calls")).json()
    assert body["next"] is None
    assert [c["pbx_call_id"] for c in body["items"]] == ["a3", "a2", "a1"]
    a1 = body["items"][2]
    assert {k: a1[k] for k in a1 if k != "id"} == {
        "pbx": "main",
        "pbx_call_id": "a1",
        "direction": "inbound",
        "from_number": "+14155550100",
        "to_number": "+14155559999",
        "from_name": "CALLER",
        "external_number": "+14155550100",
        "disposition": "answered",
        "hangup_side": "caller",
        "answered_by_extension": "1001",
        "answered_by_user": "alice",
        "placed_by_extension": None,
        "placed_by_user": None,
        "started_at": "2025-03-01T09:01:00Z",
        "answered_at": "2025-03-01T09:01:06Z",
        "ended_at": "2025-03-01T09:02:36Z",
        "ring_seconds": 6,
        "talk_seconds": 90,
        "contact": {"id": ids["ada"], "name": "Ada"},
        "company": {"id": ids["acme"], "name": "Acme"},
        "match": "contact",
        "transferred_to": "1009",
        "recording": "rec/a1.wav",
        "queue": None,  # not a queue call
        "note": "",
        "call_type": None,
    }
    one = (await admin_client.get(f"/api/v1/calls/{a1['id']}")).json()
    assert one["pbx_call_id"] == "a1"
    assert [e["kind"] for e in one["events"]] == [
        "call_started",
        "call_answered",
        "call_transferred",
        "call_ended",
        "recording_available",
    ]


async def test_filters_and_pagination(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    ids = await world(hub)

    async def ids_for(**params: str) -> list[str]:
        answer = await admin_client.get("/api/v1/calls", params=params)
        assert answer.status_code == 200, answer.text
        return [c["pbx_call_id"] for c in answer.json()["items"]]

    assert await ids_for(disposition="missed") == ["a2"]
    assert await ids_for(direction="outbound") == []
    assert await ids_for(user="alice") == ["a1"]
    assert await ids_for(contact_id=str(ids["ada"])) == ["a1"]
    assert await ids_for(company_id=str(ids["acme"])) == ["a2", "a1"]
    assert await ids_for(tag="vip") == ["a1"]
    assert await ids_for(has_recording="true") == ["a1"]
    assert await ids_for(has_recording="false") == ["a3", "a2"]
    assert await ids_for(since="2025-03-01T09:02:00Z") == ["a3", "a2"]
    assert await ids_for(until="2025-03-01T09:02:00+00:00") == ["a1"]
    assert await ids_for(until="2025-03-01") == ["a3", "a2", "a1"]
    assert await ids_for(q="(415) 555-0101") == ["a2"]
    assert await ids_for(q="030 123456") == []  # a US reading of a German number: not the same party
    assert await ids_for(q="30123456") == ["a3"]
    assert await ids_for(q="carl") == ["a2"]
    first = (await admin_client.get("/api/v1/calls", params={"limit": "2"})).json()
    assert [c["pbx_call_id"] for c in first["items"]] == ["a3", "a2"]
    rest = (await admin_client.get("/api/v1/calls", params={"limit": "2", "cursor": first["next"]})).json()
    assert [c["pbx_call_id"] for c in rest["items"]] == ["a1"] and rest["next"] is None


async def test_agents_see_their_calls_and_their_contacts_calls(hub: Hub, client: httpx.AsyncClient) -> None:
    await world(hub)
    alice = {"authorization": f"Bearer {await api_token(hub, 'alice')}"}
    bob = {"authorization": f"Bearer {await api_token(hub, 'bob')}"}
    mgr = {"authorization": f"Bearer {await api_token(hub, 'mgr')}"}
    seen = {}
    for name, headers in (("alice", alice), ("bob", bob), ("mgr", mgr)):
        body = (await client.get("/api/v1/calls", headers=headers)).json()
        seen[name] = [c["pbx_call_id"] for c in body["items"]]
    assert seen == {"alice": ["a1"], "bob": ["a1"], "mgr": ["a3", "a2", "a1"]}
    a3 = (await client.get("/api/v1/calls", headers=mgr)).json()["items"][0]["id"]
    hidden = await client.get(f"/api/v1/calls/{a3}", headers=alice)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "not_found"
    exported = await client.get("/api/v1/calls/export.csv", headers=bob)
    assert exported.status_code == 200, exported.text
    csv_text = exported.text
    assert [row["pbx_call_id"] for row in csv.DictReader(io.StringIO(csv_text))] == ["a1"]


async def test_bad_input_is_4xx_json(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    await world(hub)
    cases = [
        ("/api/v1/calls?since=yesterday", 400),
        ("/api/v1/calls?direction=sideways", 400),
        ("/api/v1/calls?disposition=maybe", 400),
        ("/api/v1/calls?user=nobody", 400),
        ("/api/v1/calls?contact_id=abc", 400),
        ("/api/v1/calls?has_recording=perhaps", 400),
        ("/api/v1/calls?cursor=!!!", 400),
        ("/api/v1/calls?cursor=WyJ4IiwgMV0", 400),
        ("/api/v1/calls?limit=0", 422),
        ("/api/v1/calls?limit=100000", 422),
        ("/api/v1/calls/999999", 404),
        ("/api/v1/calls/abc", 404),
        ("/api/v1/calls?q=" + "x" * 300, 422),
    ]
    for path, status in cases:
        answer = await admin_client.get(path)
        assert answer.status_code == status, (path, answer.text)
        assert set(answer.json()["error"]) >= {"code", "message"}, path
    bad_json = await admin_client.put(
        "/api/v1/calls/1/contact", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    no_auth = await httpx.AsyncClient(transport=admin_client._transport, base_url="http://testserver").get(
        "/api/v1/calls"
    )
    assert no_auth.status_code == 401


async def test_link_an_ambiguous_call_by_hand(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    await world(hub)
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        x = await d.create(
            ContactInput(ContactKind.PERSON, "X", phones=(phone_from_input("+4930999999", "US"),))
        )
        await d.create(ContactInput(ContactKind.PERSON, "Y", phones=(phone_from_input("+4930999999", "US"),)))
    await feed(hub, inbound("amb", "+4930999999", 9))
    call = (await admin_client.get("/api/v1/calls", params={"q": "+4930999999"})).json()["items"][0]
    assert call["match"] == "ambiguous" and call["contact"] is None
    detail = (await admin_client.get(f"/api/v1/calls/{call['id']}")).json()
    assert [c["name"] for c in detail["candidates"]] == ["X", "Y"]
    linked = await admin_client.put(f"/api/v1/calls/{call['id']}/contact", json={"contact_id": x})
    assert linked.json()["contact"] == {"id": x, "name": "X"}
    # A late event does not undo the person's choice.
    await feed(
        hub, [RecordingAvailable(pbx="main", call_id="amb", at=T0 + timedelta(hours=1), recording="r")]
    )
    after = (await admin_client.get(f"/api/v1/calls/{call['id']}")).json()
    assert after["contact"] == {"id": x, "name": "X"} and after["recording_file"] == "r"
    missing = await admin_client.put(f"/api/v1/calls/{call['id']}/contact", json={"contact_id": 424242})
    assert missing.status_code == 400


async def test_csv_export_follows_filters_and_defuses_formulas(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    await world(hub)
    await feed(hub, inbound("evil", "+14155550199", 20))
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        await d.create(
            ContactInput(
                ContactKind.PERSON, "=HYPERLINK(1)", phones=(phone_from_input("+14155550198", "US"),)
            )
        )
    await feed(hub, inbound("evil2", "+14155550198", 21))
    answer = await admin_client.get("/calls/export.csv", params={"disposition": "missed"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["pbx_call_id"] for r in rows] == ["evil2", "evil", "a2"]
    assert rows[0]["contact"] == "'=HYPERLINK(1)"
    assert rows[1]["from_number"] == "'+14155550199"


async def test_pages_render(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    ids = await world(hub)
    html = {"accept": "text/html"}
    page = await admin_client.get("/calls", headers=html)
    assert page.status_code == 200
    assert "Ada" in page.text and "Export CSV" in page.text
    filtered = await admin_client.get("/calls", params={"disposition": "missed"}, headers=html)
    assert "Carl" in filtered.text and "Ada" not in filtered.text
    bad = await admin_client.get("/calls", params={"since": "nonsense"}, headers=html)
    assert bad.status_code == 400 and "since" in bad.text
    call_id = (await admin_client.get("/api/v1/calls", params={"q": "+4930123456"})).json()["items"][0]["id"]
    detail = await admin_client.get(f"/calls/{call_id}", headers=html)
    assert detail.status_code == 200
    assert "Create contact" in detail.text and "number=%2B4930123456" in detail.text
    company = await admin_client.get(f"/contacts/{ids['acme']}", headers=html)
    assert company.status_code == 200
    # Consolidated over its people, grouped by person.
    assert company.text.index("<h3>Ada") < company.text.index("<h3>Carl")
    assert (await admin_client.get("/calls/999999", headers=html)).status_code == 404


async def test_new_contact_claims_its_earlier_calls(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    await world(hub)
    before = (await admin_client.get("/api/v1/calls", params={"q": "+4930123456"})).json()["items"][0]
    assert before["contact"] is None and before["match"] == "none"
    made = await admin_client.post(
        "/api/v1/contacts", json={"name": "Klaus", "phones": [{"number": "+49 30 123456"}]}
    )
    assert made.status_code == 201
    after = (await admin_client.get(f"/api/v1/calls/{before['id']}")).json()
    assert after["contact"] == {"id": made.json()["id"], "name": "Klaus"}
    assert (await admin_client.delete(f"/api/v1/contacts/{made.json()['id']}")).status_code == 204
    gone = (await admin_client.get(f"/api/v1/calls/{before['id']}")).json()
    assert gone["contact"] is None and gone["match"] == "none"


FORMULAS = ['=1+HYPERLINK("http://x.test","y")', "-2+3", "@1+SUM(1)", "+2+3", "\t=1+1", "\r=1+1"]


async def test_csv_export_neutralises_every_formula_start(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    # A caller ID is enough to plant a formula; so is a contact's or a company's name.
    for i, payload in enumerate(FORMULAS):
        await feed(hub, inbound(f"f{i}", payload, i))
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        company = await d.create(ContactInput(ContactKind.COMPANY, "@SUM(1)"))
        await d.create(
            ContactInput(
                ContactKind.PERSON,
                "-2+3",
                company_id=company,
                phones=(phone_from_input("+14155550197", "US"),),
            )
        )
    await feed(hub, inbound("named", "+14155550197", 30))
    answer = await admin_client.get("/api/v1/calls/export.csv")
    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.text, newline="")))
    for row in rows:
        for cell in row:
            assert cell[:1] not in FORMULA_STARTS, (cell, row)
    by_id = {r[2]: r for r in rows[1:]}
    assert [by_id[f"f{i}"][4] for i in range(len(FORMULAS))] == ["'" + p for p in FORMULAS]
    named = dict(zip(rows[0], by_id["named"], strict=True))
    assert (named["contact"], named["company"]) == ("'-2+3", "'@SUM(1)")
    # An E.164 number is exported as text a spreadsheet keeps (an apostrophe, not 1.42E+10).
    assert named["from_number"] == "'+14155550197"


def outbound(call_id: str, extension: str, number: str, minute: int) -> list[CallEvent]:
    at = T0 + timedelta(minutes=minute)
    return [
        CallStarted(
            pbx="main",
            call_id=call_id,
            at=at,
            direction=Direction.OUTBOUND,
            from_number=extension,
            to_number=number,
            placed_by=extension,
        ),
        CallAnswered(pbx="main", call_id=call_id, at=at + timedelta(seconds=8), extension=""),
        CallEnded(
            pbx="main", call_id=call_id, at=at + timedelta(seconds=68), disposition=Disposition.ANSWERED
        ),
    ]


async def test_outbound_call_names_who_placed_it_and_nobody_as_answerer(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    await world(hub)
    await add_user(hub, "nobody", Role.AGENT)  # owns nothing, placed nothing
    await feed(hub, outbound("o1", "1001", "+4930123456", 30))
    alice = {"authorization": f"Bearer {await api_token(hub, 'alice')}"}
    nobody = {"authorization": f"Bearer {await api_token(hub, 'nobody')}"}
    mgr = {"authorization": f"Bearer {await api_token(hub, 'mgr')}"}
    listed = (await client.get("/api/v1/calls", params={"direction": "outbound"}, headers=mgr)).json()
    (o1,) = listed["items"]
    assert o1["answered_by_extension"] is None and o1["answered_by_user"] is None
    assert (o1["placed_by_extension"], o1["placed_by_user"]) == ("1001", "alice")
    assert (o1["ring_seconds"], o1["talk_seconds"]) == (8, 60)
    # The agent who placed it sees it, and it counts as theirs; an agent with nothing sees nothing.
    mine = (await client.get("/api/v1/calls", headers=alice)).json()
    assert [c["pbx_call_id"] for c in mine["items"]] == ["o1", "a1"]
    by_user = (await client.get("/api/v1/calls", params={"user": "alice"}, headers=mgr)).json()
    assert [c["pbx_call_id"] for c in by_user["items"]] == ["o1", "a1"]
    assert (await client.get("/api/v1/calls", headers=nobody)).json()["items"] == []
    assert (await client.get(f"/api/v1/calls/{o1['id']}", headers=nobody)).status_code == 404
    exported = await client.get("/api/v1/calls/export.csv", params={"direction": "outbound"}, headers=alice)
    (row,) = list(csv.DictReader(io.StringIO(exported.text)))
    assert (row["placed_by_extension"], row["placed_by_user"], row["answered_by_extension"]) == (
        "1001",
        "alice",
        "",
    )
    html = {"accept": "text/html", **mgr}
    page = await client.get("/calls", params={"direction": "outbound"}, headers=html)
    assert "Placed by" in page.text and "alice" in page.text
    detail = await client.get(f"/calls/{o1['id']}", headers=html)
    assert "Placed by" in detail.text and "ext. 1001" in detail.text


async def test_a_shared_number_shows_the_chooser_or_the_choice_never_both(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    await world(hub)
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        x = await d.create(
            ContactInput(ContactKind.PERSON, "Xavier", phones=(phone_from_input("+4930999999", "US"),))
        )
        await d.create(
            ContactInput(ContactKind.PERSON, "Yvonne", phones=(phone_from_input("+4930999999", "US"),))
        )
    await feed(hub, inbound("shared", "+4930999999", 9))
    call = (await admin_client.get("/api/v1/calls", params={"q": "+4930999999"})).json()["items"][0]
    html = {"accept": "text/html"}
    before = (await admin_client.get(f"/calls/{call['id']}", headers=html)).text
    assert "which one called?" in before and 'id="choose"' in before
    assert "Create contact" not in before and ">unknown<" not in before
    # The DID shows in the region's national format, as plain text (calling it would ring ourselves).
    assert "(415) 555-9999" in before and 'data-number="+14155559999"' not in before
    assert 'data-number="+4930999999"' in before
    await admin_client.put(f"/api/v1/calls/{call['id']}/contact", json={"contact_id": x})
    after = (await admin_client.get(f"/calls/{call['id']}", headers=html)).text
    assert 'id="choose"' not in after and "Xavier" in after and "Create contact" not in after
    assert f"/calls/{call['id']}?choose=1" in after  # the choice can still be changed
    again = (await admin_client.get(f"/calls/{call['id']}", params={"choose": "1"}, headers=html)).text
    assert 'id="choose"' in again and "Yvonne" in again


def test_the_list_serialises_calls_exactly_as_the_call_model_does() -> None:
    """``GET /api/v1/calls`` writes its JSON straight from the views (the busiest read); the
    document must be byte for byte what the documented ``CallOut`` model gives, for every shape
    a call takes: no direction, no disposition, empty strings, fractions of seconds, links."""
    import itertools

    import orjson

    from callbridge.domain.directory import MatchKind
    from callbridge.domain.events import QueueOutcome
    from callbridge.domain.queues import QueueVisit
    from callbridge.store.calls import CallView, Ref
    from callbridge.web.routes.calls import CallOut, plain_call

    shapes = itertools.product(
        [None, *Direction],
        [None, *Disposition],
        ["", "1002"],
        [None, Ref(7, "Acme Ltd")],
        [T0, T0.replace(microsecond=400_000), T0.replace(microsecond=123)],
        [
            (),
            (QueueVisit("sales", T0),),
            (
                QueueVisit("sales", T0, QueueOutcome.TIMEOUT, 30, missed=("1001",)),
                QueueVisit(
                    "support", T0, QueueOutcome.ANSWERED, 4, "1002", 61, True, ("1002", "1003"), ("1003",)
                ),
            ),
        ],
    )
    seen = 0
    for direction, disposition, extension, ref, at, visits in shapes:
        view = CallView(
            id=seen + 1,
            pbx="pbx1",
            pbx_call_id=f"c{seen}",
            direction=direction,
            from_number="+14155550100",
            to_number=extension,
            from_name='Ann "quoted" \u00e9',
            external_number="+14155550100",
            disposition=disposition,
            hangup_side=HangupSide.CALLER,
            answered_by_extension=extension,
            answered_by_user=extension and "ann",
            started_at=at,
            answered_at=at + timedelta(seconds=3) if extension else None,
            ended_at=None if ref else at + timedelta(seconds=61),
            ring_seconds=3,
            talk_seconds=58,
            contact=ref,
            company=ref,
            match=MatchKind.CONTACT if ref else MatchKind.NONE,
            transferred_to=extension,
            recording=extension and "rec.wav",
            placed_by_extension=extension,
            placed_by_user=extension and "bob",
            queue_visits=visits,
            note=extension and 'Wants a "quote" =1+1',
            call_type=extension and "Sales",
        )
        ours = orjson.dumps(plain_call(view), option=orjson.OPT_UTC_Z)
        assert ours == CallOut.of(view).model_dump_json().encode(), view
        seen += 1
    assert seen > 100
