"""Directory over HTTP: CRUD, search in any number format, roles, tags, import, extensions, pages."""

from __future__ import annotations

import httpx
from tests.conftest import add_user, api_token

from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub

ADA = {
    "kind": "person",
    "name": "Ada Lovelace",
    "phones": [{"number": "(415) 555-0100"}, {"number": "+44 7700 900123", "kind": "mobile"}],
    "email": "ada@example.com",
    "tags": ["VIP", "vip", "key"],
    "notes": "prefers mornings",
}


async def test_crud_and_search(admin_client: httpx.AsyncClient) -> None:
    company = (await admin_client.post("/api/v1/contacts", json={"kind": "company", "name": "Acme"})).json()
    created = await admin_client.post(
        "/api/v1/contacts", json={**ADA, "company_id": company["id"], "owner": "admin"}
    )
    assert created.status_code == 201, created.text
    ada = created.json()
    assert ada["phones"] == [
        {"number": "(415) 555-0100", "kind": "work", "e164": "+14155550100"},
        {"number": "+44 7700 900123", "kind": "mobile", "e164": "+447700900123"},
    ]
    assert ada["tags"] == ["key", "VIP"]  # case-insensitive duplicates dropped, sorted
    assert ada["company"] == {"id": company["id"], "name": "Acme"}
    assert ada["owner"] == "admin"
    for q in ("ada", "LOVELACE", "+1 415 555 0100", "4155550100", "0100", "ada@example"):
        found = (await admin_client.get("/api/v1/contacts", params={"q": q})).json()["items"]
        assert [c["name"] for c in found] == ["Ada Lovelace"], q
    by_tag = (await admin_client.get("/api/v1/contacts", params={"tag": "vip"})).json()["items"]
    assert [c["id"] for c in by_tag] == [ada["id"]]
    companies = (await admin_client.get("/api/v1/contacts", params={"kind": "company"})).json()["items"]
    assert [c["name"] for c in companies] == ["Acme"]
    patched = await admin_client.patch(
        f"/api/v1/contacts/{ada['id']}", json={"name": "Ada King", "owner": None}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Ada King"
    assert patched.json()["owner"] is None
    assert patched.json()["phones"] == ada["phones"]  # untouched fields stay
    lookup = (await admin_client.get("/api/v1/lookup", params={"number": "+14155550100"})).json()
    assert lookup["name"] == "Ada King (Acme)" and lookup["match"] == "contact"
    history = await admin_client.get(f"/api/v1/contacts/{company['id']}/calls")
    assert history.json() == {"items": [], "next": None}
    assert (await admin_client.delete(f"/api/v1/contacts/{ada['id']}")).status_code == 204
    assert (await admin_client.get(f"/api/v1/contacts/{ada['id']}")).status_code == 404


async def test_bad_contact_input_is_4xx(admin_client: httpx.AsyncClient) -> None:
    cases = [
        ({"name": ""}, 400),
        ({"name": "X", "phones": [{"number": "call me"}]}, 400),
        ({"name": "X", "phones": [{"number": "1001"}]}, 400),
        ({"name": "X", "phones": [{"number": "+14155550100", "kind": "fax"}]}, 422),
        ({"name": "X", "email": "nope"}, 400),
        ({"name": "X", "tags": ["a,b"]}, 400),
        ({"name": "X", "owner": "ghost"}, 400),
        ({"name": "X", "company_id": 999}, 400),
        ({"name": "X", "surprise": 1}, 422),
        ({"name": "X" * 300}, 422),
        ({"kind": "robot", "name": "X"}, 422),
    ]
    for body, status in cases:
        answer = await admin_client.post("/api/v1/contacts", json=body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["message"], body
    raw = await admin_client.post(
        "/api/v1/contacts", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert raw.status_code == 422
    assert (await admin_client.get("/api/v1/contacts", params={"cursor": "%%%"})).status_code == 400
    assert (await admin_client.get("/api/v1/contacts", params={"kind": "robot"})).status_code == 400
    assert (await admin_client.patch("/api/v1/contacts/999", json={"name": "x"})).status_code == 404
    dup = {"name": "A", "external_id": "crm-1"}
    assert (await admin_client.post("/api/v1/contacts", json=dup)).status_code == 201
    assert (await admin_client.post("/api/v1/contacts", json=dup)).status_code == 400


async def test_agents_cannot_delete_or_import(hub: Hub, client: httpx.AsyncClient) -> None:
    await add_user(hub, "agent", Role.AGENT)
    headers = {"authorization": f"Bearer {await api_token(hub, 'agent')}"}
    made = await client.post("/api/v1/contacts", json={"name": "Mine"}, headers=headers)
    assert made.status_code == 201
    gone = await client.delete(f"/api/v1/contacts/{made.json()['id']}", headers=headers)
    assert gone.status_code == 403
    upload = await client.post(
        "/api/v1/contacts/import", files={"file": ("c.csv", b"Name\nX\n", "text/csv")}, headers=headers
    )
    assert upload.status_code == 403


async def test_import_reports_lines_and_is_safe_to_rerun(admin_client: httpx.AsyncClient) -> None:
    data = (
        b"Name,Company,Phone,Mobile,Tags,Owner,External ID\n"
        b"Ada,Acme,(415) 555-0100,,VIP,admin,\n"
        b"Bob,Acme,not a number,,,,\n"
        b"Carl,Acme,+1 415 555 0101,,,,crm-9\n"
        b"Dora,,+1 415 555 0102,,,ghost,\n"
    )
    first = await admin_client.post("/api/v1/contacts/import", files={"file": ("c.csv", data, "text/csv")})
    assert first.status_code == 200, first.text
    assert first.json() == {
        "created": 2,
        "updated": 0,
        "companies_created": 1,
        "errors": [
            {"line": 3, "reason": "phone 'not a number': not a phone number"},
            {"line": 5, "reason": "owner 'ghost' is not a user"},
        ],
        "encoding": "UTF-8",
        "warnings": [],
    }
    again = await admin_client.post("/api/v1/contacts/import", files={"file": ("c.csv", data, "text/csv")})
    assert (again.json()["created"], again.json()["updated"], again.json()["companies_created"]) == (0, 2, 0)
    everyone = (await admin_client.get("/api/v1/contacts")).json()["items"]
    assert sorted(c["name"] for c in everyone) == ["Acme", "Ada", "Carl"]
    broken = await admin_client.post(
        "/api/v1/contacts/import", files={"file": ("c.csv", b"Phone\n+14155550100\n", "text/csv")}
    )
    assert broken.status_code == 400
    assert "name column" in broken.json()["error"]["message"]
    empty = await admin_client.post("/api/v1/contacts/import", files={"file": ("c.csv", b"", "text/csv")})
    assert empty.status_code == 400


async def test_tags_rename_and_delete(admin_client: httpx.AsyncClient) -> None:
    await admin_client.post("/api/v1/contacts", json={"name": "A", "tags": ["vip", "x"]})
    await admin_client.post("/api/v1/contacts", json={"name": "B", "tags": ["VIP"]})
    tags = (await admin_client.get("/api/v1/tags")).json()["items"]
    assert {t["tag"].lower(): t["contacts"] for t in tags} == {"vip": 2, "x": 1}
    renamed = await admin_client.post("/api/v1/tags/rename", json={"old": "vip", "new": "Gold"})
    assert renamed.json() == {"tag": "Gold", "contacts": 2}
    assert (await admin_client.delete("/api/v1/tags/x")).status_code == 204
    assert (await admin_client.delete("/api/v1/tags/x")).status_code == 404
    tags = (await admin_client.get("/api/v1/tags")).json()["items"]
    assert tags == [{"tag": "Gold", "contacts": 2}]


async def test_extension_mapping_api(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    await add_user(hub, "alice", Role.AGENT)
    async with hub.db.unit() as repos:
        await repos.pbxes.add("main", PbxKind.ASTERISK, {}, {})
    ok = await admin_client.put("/api/v1/extensions/main/1001", json={"user": "alice"})
    assert ok.json() == {"pbx": "main", "extension": "1001", "user": "alice"}
    assert (await admin_client.get("/api/v1/extensions")).json()["items"] == [ok.json()]
    assert (await admin_client.put("/api/v1/extensions/nope/1001", json={"user": "alice"})).status_code == 404
    assert (await admin_client.put("/api/v1/extensions/main/1001", json={"user": "ghost"})).status_code == 400
    assert (
        await admin_client.put("/api/v1/extensions/main/10%2001", json={"user": "alice"})
    ).status_code == 400
    assert (await admin_client.delete("/api/v1/extensions/main/1001")).status_code == 204
    assert (await admin_client.delete("/api/v1/extensions/main/1001")).status_code == 404


async def test_pages_create_edit_delete_and_upload(admin_client: httpx.AsyncClient) -> None:
    html = {"accept": "text/html"}
    new = await admin_client.get("/contacts/new", params={"number": "+4930123456"}, headers=html)
    assert new.status_code == 200 and "+4930123456" in new.text
    token = admin_client.headers["x-csrf-token"]
    form = {
        "csrf_token": token,
        "kind": "person",
        "name": "Grace",
        "company": "Navy",
        "phones": "+1 212 555 0100\nmobile: +44 7700 900124",
        "tags": "VIP, admiral",
        "owner": "admin",
        "email": "",
        "notes": "",
        "external_id": "",
    }
    made = await admin_client.post("/contacts/new", data=form, headers=html)
    assert made.status_code == 303
    detail_url = made.headers["location"]
    detail = await admin_client.get(detail_url, headers=html)
    assert "Grace" in detail.text and "Navy" in detail.text and "+447700900124" in detail.text
    bad = await admin_client.post("/contacts/new", data={**form, "phones": "garbage"}, headers=html)
    assert bad.status_code == 400 and "garbage" in bad.text
    edit = await admin_client.get(f"{detail_url}/edit", headers=html)
    assert edit.status_code == 200 and "admiral" in edit.text
    saved = await admin_client.post(f"{detail_url}/edit", data={**form, "name": "Grace Hopper"}, headers=html)
    assert saved.status_code == 303
    listing = await admin_client.get("/contacts", params={"q": "212 555 0100"}, headers=html)
    assert "Grace Hopper" in listing.text
    navy = await admin_client.get("/contacts", params={"kind": "company"}, headers=html)
    assert "Navy" in navy.text
    upload = await admin_client.post(
        "/contacts/import",
        data={"csrf_token": token},
        files={"file": ("c.csv", b"Name,Phone\nLin,+14155550111\nBad,xx\n", "text/csv")},
        headers=html,
    )
    assert upload.status_code == 200
    assert "1 created" in upload.text and 'data-label="Line">3</td>' in upload.text
    tags = await admin_client.get("/contacts/tags", headers=html)
    assert "admiral" in tags.text
    # Deleting asks first: without the confirmation nothing goes.
    unconfirmed = await admin_client.post(f"{detail_url}/delete", data={"csrf_token": token}, headers=html)
    assert unconfirmed.status_code == 303 and unconfirmed.headers["location"] == f"{detail_url}/delete"
    question = await admin_client.get(f"{detail_url}/delete", headers=html)
    assert question.status_code == 200 and "This removes the contact" in question.text
    assert (await admin_client.get(detail_url, headers=html)).status_code == 200
    deleted = await admin_client.post(
        f"{detail_url}/delete", data={"csrf_token": token, "confirm": "yes"}, headers=html
    )
    assert deleted.status_code == 303
    assert (await admin_client.get(detail_url, headers=html)).status_code == 404


async def test_import_links_calls_logged_before_the_contact_existed(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    from datetime import UTC, datetime, timedelta

    from callbridge.domain.events import CallEnded, CallStarted, Direction, Disposition

    t0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    await hub.handle_event(
        CallStarted(
            pbx="main",
            call_id="early",
            at=t0,
            direction=Direction.INBOUND,
            from_number="+14155550177",
            to_number="1001",
        )
    )
    await hub.handle_event(
        CallEnded(pbx="main", call_id="early", at=t0 + timedelta(seconds=20), disposition=Disposition.MISSED)
    )
    before = (await admin_client.get("/api/v1/calls")).json()["items"]
    assert [c["contact"] for c in before] == [None]
    data = b"Name,Phone\nEve Early,(415) 555-0177\n"
    answer = await admin_client.post("/api/v1/contacts/import", files={"file": ("c.csv", data, "text/csv")})
    assert answer.json()["created"] == 1
    after = (await admin_client.get("/api/v1/calls")).json()["items"]
    assert after[0]["contact"]["name"] == "Eve Early"


def _upload(data: bytes, **form: str) -> dict[str, object]:
    return {"files": {"file": ("c.csv", data, "text/csv")}, "data": form}


async def _names(client: httpx.AsyncClient) -> list[str]:
    return sorted(
        c["name"] for c in (await client.get("/api/v1/contacts", params={"limit": 500})).json()["items"]
    )


async def test_import_reads_excel_unicode_text_and_legacy_encodings(admin_client: httpx.AsyncClient) -> None:
    unicode_text = "Name\tCompany\tPhone\r\nZoë Müller\tAcme\t+14155550100\r\n".encode("utf-16")
    answer = await admin_client.post("/api/v1/contacts/import", **_upload(unicode_text))
    assert answer.status_code == 200, answer.text
    assert (answer.json()["created"], answer.json()["errors"], answer.json()["encoding"]) == (1, [], "UTF-16")
    shift_jis = (
        "Name,Company,Phone\n山田太郎,株式会社テスト,+81 3 1234 5678\n鈴木花子,サンプル商事,+81 6 9876 5432\n"
    )
    guessed = await admin_client.post("/api/v1/contacts/import", **_upload(shift_jis.encode("shift_jis")))
    assert guessed.status_code == 200, guessed.text
    assert guessed.json()["created"] == 2 and guessed.json()["encoding"] == "Shift_JIS"
    assert "Shift_JIS" in guessed.json()["warnings"][0]
    declared = await admin_client.post(
        "/api/v1/contacts/import",
        **_upload("Name,Phone\nJürgen,+49 30 1234567\n".encode("cp1252"), encoding="cp1252"),
    )
    assert (declared.json()["created"], declared.json()["warnings"]) == (1, [])
    assert await _names(admin_client) == [
        "Acme",
        "Jürgen",
        "Zoë Müller",
        "サンプル商事",
        "山田太郎",
        "株式会社テスト",
        "鈴木花子",
    ]
    wrong = await admin_client.post(
        "/api/v1/contacts/import", **_upload("Name\nJürgen\n".encode("cp1252"), encoding="utf-8")
    )
    assert wrong.status_code == 400 and "not valid UTF-8" in wrong.json()["error"]["message"]


async def test_import_reports_bad_rows_and_imports_the_rest(admin_client: httpx.AsyncClient) -> None:
    data = (
        b"Name,Notes,Phone\n"
        b"Ada,," + b"+1 415 555 0100\n"
        b"Nul\x00Name,,+1 415 555 0101\n"
        b"Long," + b"x" * 200_000 + b",+1 415 555 0102\n"
        b'Quote,"opened,+1 415 555 0103\n'
        b"Swallowed,,+1 415 555 0104\n"
        b'Closer,"x",+1 415 555 0105\n'
        b"Last,,+1 415 555 0106\n"
    )
    answer = await admin_client.post("/api/v1/contacts/import", **_upload(data))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["created"] == 2
    assert [e["line"] for e in body["errors"]] == [3, 4, 5]
    assert "NUL" in body["errors"][0]["reason"]
    assert "longer than 10000" in body["errors"][1]["reason"]
    assert "lines 5–7" in body["errors"][2]["reason"]
    assert await _names(admin_client) == ["Ada", "Last"]


async def test_import_rerun_does_not_duplicate_rows_without_number_or_id(
    admin_client: httpx.AsyncClient,
) -> None:
    data = b"Name,Company,Email\nEve,Acme,eve@acme.test\nMallory,,\n"
    first = (await admin_client.post("/api/v1/contacts/import", **_upload(data))).json()
    assert (first["created"], first["updated"], first["companies_created"]) == (2, 0, 1)
    again = (await admin_client.post("/api/v1/contacts/import", **_upload(data))).json()
    assert (again["created"], again["updated"], again["companies_created"]) == (0, 2, 0)
    assert await _names(admin_client) == ["Acme", "Eve", "Mallory"]


async def test_import_takes_files_past_the_general_body_limit(admin_client: httpx.AsyncClient) -> None:
    rows = "".join(f"Person {i},{'n' * 8000}\n" for i in range(400))
    data = ("Name,Notes\n" + rows).encode()
    assert len(data) > 3 * 1024 * 1024
    answer = await admin_client.post("/api/v1/contacts/import", **_upload(data))
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["created"] == 400


async def test_a_file_over_the_import_limit_gets_a_sentence(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    limit = hub.settings.max_import_bytes
    sentence = f"The file is larger than {limit // (1024 * 1024)} MiB, the most an upload takes."
    just_over = b"Name\n" + b"x" * (limit - 4)  # the file alone is over; the request is within
    api = await admin_client.post("/api/v1/contacts/import", **_upload(just_over))
    assert api.status_code == 413
    assert api.json()["error"]["code"] == "body_too_large"
    assert api.json()["error"]["message"].startswith(sentence)
    html = {"accept": "text/html"}
    token = admin_client.headers["x-csrf-token"]
    for data in (just_over, just_over + b"x" * (1024 * 1024)):  # checked by the page, by the middleware
        page = await admin_client.post(
            "/contacts/import",
            files={"file": ("c.csv", data, "text/csv")},
            data={"csrf_token": token},
            headers=html,
        )
        assert page.status_code == 413
        assert page.headers["content-type"].startswith("text/html")
        assert sentence in page.text and page.text.startswith("<!doctype html>")
    assert await _names(admin_client) == []


async def test_import_page_says_what_happened_in_sentences(admin_client: httpx.AsyncClient) -> None:
    html = {"accept": "text/html"}
    token = admin_client.headers["x-csrf-token"]

    async def post(data: bytes) -> httpx.Response:
        return await admin_client.post(
            "/contacts/import",
            files={"file": ("c.csv", data, "text/csv")},
            data={"csrf_token": token},
            headers=html,
        )

    done = await post(b"Name,Company,Phone\nLin,Acme,+14155550111\nBad,,xx\n")
    assert done.status_code == 200
    assert "1 created, 0 updated, 1 company created, 1 row not imported." in done.text
    assert "Read as UTF-8." in done.text
    guessed = await post("Name,Phone\nJürgen Groß,+49 30 1234567\n".encode("cp1252"))
    assert "The file is not UTF-8; it was read as Windows-1252, a guess" in guessed.text
    refused = await post(b"Phone\n+14155550100\n")
    assert refused.status_code == 400
    assert "No name column: need one of name" in refused.text


async def test_a_large_import_commits_in_chunks(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    from sqlalchemy import event

    from callbridge.web.routes.contacts import IMPORT_CHUNK

    rows = IMPORT_CHUNK * 3 + 1
    data = b"Name,Phone\n" + b"".join(f"P{i},+1 415 600 {i:04d}\n".encode() for i in range(rows))
    commits = 0

    def counted(_conn: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(hub.db.engine.sync_engine, "commit", counted)
    try:
        answer = await admin_client.post(
            "/api/v1/contacts/import", files={"file": ("c.csv", data, "text/csv")}
        )
    finally:
        event.remove(hub.db.engine.sync_engine, "commit", counted)
    assert answer.status_code == 200 and answer.json()["created"] == rows
    # The writer is let go between chunks (one transaction for the whole file held it throughout).
    assert commits >= 4
