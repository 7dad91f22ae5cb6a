"""The dialplan API as a PBX sees it: plain text for CURL(), JSON on request, 403 on bad tokens."""

from __future__ import annotations

import httpx
from tests.conftest import add_user

from callbridge.domain.directory import ContactKind, phone_from_input
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.directory import ContactInput
from callbridge.store.directory import SqlDialplanTokens, SqlDirectory, SqlExtensions


async def setup(hub: Hub) -> str:
    owner = await add_user(hub, "alice", Role.AGENT)
    async with hub.db.unit() as repos:
        await repos.pbxes.add("main", PbxKind.ASTERISK, {}, {})
        await repos.pbxes.add("branch", PbxKind.ASTERISK, {"dial_technology": "SIP"}, {})
    async with hub.db.session() as s:
        d = SqlDirectory(s)
        acme = await d.create(
            ContactInput(ContactKind.COMPANY, "Acme Ltd", owner_id=owner.id, tags=("partner",))
        )
        await d.create(
            ContactInput(
                ContactKind.PERSON,
                "Ada Lovelace",
                company_id=acme,
                phones=(phone_from_input("+1 415 555 0100", "US"),),
                tags=("VIP", "key"),
            )
        )
        await d.create(
            ContactInput(ContactKind.PERSON, "Eve", phones=(phone_from_input("+1 212 555 0100", "US"),))
        )
        await d.create(
            ContactInput(ContactKind.PERSON, "Mallory", phones=(phone_from_input("+1 212 555 0100", "US"),))
        )
        await SqlExtensions(s).map("main", "1001", owner.id)
        return await SqlDialplanTokens(s, hub.box).token_for("main")


async def test_caller_name_plain_and_json(hub: Hub, client: httpx.AsyncClient) -> None:
    token = await setup(hub)
    for number in ("+14155550100", "(415) 555-0100", "011 1 415 555 0100", "sip:+14155550100@trunk"):
        answer = await client.get("/dialplan/caller-name", params={"number": number, "token": token})
        assert answer.status_code == 200
        assert answer.text == "Ada Lovelace (Acme Ltd)"
        assert answer.headers["content-type"].startswith("text/plain")
    as_json = await client.get(
        "/dialplan/caller-name",
        params={"number": "4155550100"},
        headers={"X-Callbridge-Token": token, "Accept": "application/json"},
    )
    assert as_json.json() == {
        "number": "4155550100",
        "match": "contact",
        "name": "Ada Lovelace (Acme Ltd)",
        "contact": "Ada Lovelace",
        "company": "Acme Ltd",
    }


async def test_unknown_ambiguous_and_junk_numbers_give_empty_bodies(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    token = await setup(hub)
    for number in ("+4930123456", "+12125550100", "junk", "1001", "x" * 150):
        answer = await client.get("/dialplan/caller-name", params={"number": number, "token": token})
        assert answer.status_code == 200, number
        assert answer.text == "", number


async def test_owner_and_tags(hub: Hub, client: httpx.AsyncClient) -> None:
    token = await setup(hub)
    owner = await client.get("/dialplan/owner", params={"number": "+14155550100", "token": token})
    assert owner.text == "PJSIP/1001"  # Ada has no owner: her company's manager takes it
    owner_json = await client.get(
        "/dialplan/owner",
        params={"number": "+14155550100", "token": token},
        headers={"accept": "application/json"},
    )
    assert owner_json.json() == {
        "number": "+14155550100",
        "extension": "1001",
        "dial": "PJSIP/1001",
        "owner": "alice",
    }
    nobody = await client.get("/dialplan/owner", params={"number": "+12125550100", "token": token})
    assert nobody.text == ""
    tags = await client.get("/dialplan/tags", params={"number": "+14155550100", "token": token})
    assert tags.text == "key,VIP"
    assert (await client.get("/dialplan/tags", params={"number": "+19995550100", "token": token})).text == ""


async def test_bad_tokens_are_refused_alike(hub: Hub, client: httpx.AsyncClient) -> None:
    token = await setup(hub)
    answers = [
        await client.get("/dialplan/caller-name", params={"number": "+14155550100"}),
        await client.get("/dialplan/caller-name", params={"number": "+14155550100", "token": token + "x"}),
        await client.get("/dialplan/owner", params={"number": "+1", "token": "short"}),
        await client.get("/dialplan/tags", params={"number": "+1"}, headers={"X-Callbridge-Token": "nope"}),
    ]
    assert [a.status_code for a in answers] == [403, 403, 403, 403]
    # CURL() reads a body whatever the status: an error must not become the caller's name.
    assert [a.content for a in answers] == [b"", b"", b"", b""]
    as_json = await client.get(
        "/dialplan/caller-name", params={"number": "+1"}, headers={"accept": "application/json"}
    )
    assert as_json.status_code == 403 and as_json.json()["error"]["code"] == "forbidden"


async def test_missing_number_is_a_4xx_empty_or_json(hub: Hub, client: httpx.AsyncClient) -> None:
    token = await setup(hub)
    plain = await client.get("/dialplan/caller-name", params={"token": token})
    assert plain.status_code == 422 and plain.content == b""
    long = await client.get("/dialplan/owner", params={"token": token, "number": "1" * 500})
    assert long.status_code == 422 and long.content == b""
    unknown = await client.get("/dialplan/no-such-question", params={"token": token, "number": "1"})
    assert unknown.status_code == 404 and unknown.content == b""
    answer = await client.get(
        "/dialplan/caller-name", params={"token": token}, headers={"accept": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_request"
