"""The softphone's API: admin settings, the page's read without the secret, and the one-time
secret fetch by the user's own signed-in tab."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.conftest import add_user, api_token, csrf_of

from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.store.softphones import softphones

SECRET = "sip-secret-of-bob-42"
TURN_CREDENTIAL = "turn-credential-7"
PASSWORD = "user-password-1"


def settings(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ws_url": "wss://pbx.example.com:8089/ws",
        "sip_uri": "sip:1002@pbx.example.com",
        "auth_user": "1002",
        "secret": SECRET,
        "ice_servers": [
            {"urls": "stun:stun.example.com:3478"},
            {"urls": ["turn:turn.example.com:3478"], "username": "bob", "credential": TURN_CREDENTIAL},
        ],
    }
    body.update(changes)
    return body


async def signed_in(app: object, name: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))  # type: ignore[arg-type]
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    token = await csrf_of(client)
    answer = await client.post(
        "/login", data={"username": name, "password": PASSWORD, "csrf_token": token, "next": "/"}
    )
    assert answer.status_code == 303, answer.text
    client.headers["x-csrf-token"] = await csrf_of(client, "/account")
    return client


async def secret_of(client: httpx.AsyncClient) -> httpx.Response:
    nonce = await client.post("/api/v1/me/softphone/nonce")
    assert nonce.status_code == 200, nonce.text
    return await client.post("/api/v1/me/softphone/credential", json={"nonce": nonce.json()["nonce"]})


async def test_admin_sets_a_softphone_and_the_user_reads_it_without_the_secret(
    hub: Hub, app: object, admin_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await add_user(hub, "bob", Role.AGENT)
    caplog.set_level(logging.DEBUG)
    put = await admin_client.put("/api/v1/users/bob/softphone", json=settings())
    assert put.status_code == 200, put.text
    assert put.json()["has_secret"] is True
    assert SECRET not in put.text
    assert SECRET not in caplog.text and TURN_CREDENTIAL not in caplog.text

    # Encrypted at rest: neither the SIP secret nor the TURN credential is in the row.
    async with hub.db.unit() as repos:
        row = (await repos.session.execute(select(softphones))).one()
    assert SECRET not in str(tuple(row)) and TURN_CREDENTIAL not in str(tuple(row))

    bob = await signed_in(app, "bob")
    try:
        mine = await bob.get("/api/v1/me/softphone")
        assert mine.status_code == 200
        assert mine.json() == {
            "enabled": True,
            "ws_url": "wss://pbx.example.com:8089/ws",
            "sip_uri": "sip:1002@pbx.example.com",
            "auth_user": "1002",
            "ice_servers": [
                {"urls": ["stun:stun.example.com:3478"]},
                {"urls": ["turn:turn.example.com:3478"], "username": "bob", "credential": TURN_CREDENTIAL},
            ],
        }
        # The registering tab: one nonce, one secret.
        nonce = (await bob.post("/api/v1/me/softphone/nonce")).json()["nonce"]
        first = await bob.post("/api/v1/me/softphone/credential", json={"nonce": nonce})
        assert first.status_code == 200
        assert first.json() == {"auth_user": "1002", "secret": SECRET}
        again = await bob.post("/api/v1/me/softphone/credential", json={"nonce": nonce})
        assert again.status_code == 403
        assert SECRET not in again.text
        # A newer nonce replaces an older one.
        old = (await bob.post("/api/v1/me/softphone/nonce")).json()["nonce"]
        new = (await bob.post("/api/v1/me/softphone/nonce")).json()["nonce"]
        assert (await bob.post("/api/v1/me/softphone/credential", json={"nonce": old})).status_code == 403
        assert (await bob.post("/api/v1/me/softphone/credential", json={"nonce": new})).status_code == 200
        # CSRF: a cookie-authenticated POST without the token is refused.
        del bob.headers["x-csrf-token"]
        assert (await bob.post("/api/v1/me/softphone/nonce")).status_code == 403
    finally:
        await bob.aclose()
    assert SECRET not in caplog.text

    # A PUT without the secret keeps it.
    kept = await admin_client.put("/api/v1/users/bob/softphone", json=settings(secret=None, auth_user=""))
    assert kept.status_code == 200, kept.text
    assert kept.json()["auth_user"] == "1002"  # from the SIP URI
    bob = await signed_in(app, "bob")
    try:
        assert (await secret_of(bob)).json()["secret"] == SECRET
    finally:
        await bob.aclose()


async def test_an_agent_without_a_softphone_and_another_users_secret(
    hub: Hub, app: object, admin_client: httpx.AsyncClient
) -> None:
    await add_user(hub, "bob", Role.AGENT)
    await add_user(hub, "eve", Role.AGENT)
    assert (await admin_client.put("/api/v1/users/bob/softphone", json=settings())).status_code == 200

    eve = await signed_in(app, "eve")
    try:
        mine = await eve.get("/api/v1/me/softphone")
        assert mine.status_code == 200
        assert mine.json() == {
            "enabled": False,
            "ws_url": "",
            "sip_uri": "",
            "auth_user": "",
            "ice_servers": [],
        }
        nonce = await eve.post("/api/v1/me/softphone/nonce")
        assert nonce.status_code == 404
        assert nonce.json()["error"]["code"] == "not_found"
        # Guessing, or using a nonce of her own against bob's account: nothing.
        taken = await eve.post("/api/v1/me/softphone/credential", json={"nonce": "x" * 32})
        assert taken.status_code == 403
        assert SECRET not in taken.text
        # Admin routes are not hers.
        assert (await eve.get("/api/v1/users/bob/softphone")).status_code == 403
        assert (await eve.put("/api/v1/users/eve/softphone", json=settings())).status_code == 403
    finally:
        await eve.aclose()

    # Bob's own nonce, replayed from eve's session, does not give bob's secret.
    bob = await signed_in(app, "bob")
    eve = await signed_in(app, "eve")
    try:
        nonce = (await bob.post("/api/v1/me/softphone/nonce")).json()["nonce"]
        stolen = await eve.post("/api/v1/me/softphone/credential", json={"nonce": nonce})
        assert stolen.status_code == 403
        assert SECRET not in stolen.text
        assert (await bob.post("/api/v1/me/softphone/credential", json={"nonce": nonce})).json()[
            "secret"
        ] == SECRET
    finally:
        await bob.aclose()
        await eve.aclose()

    # An API token (not a signed-in page) never gets the secret.
    token = await api_token(hub, "bob")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50002))  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"authorization": f"Bearer {token}"}
    ) as robot:
        assert (await robot.get("/api/v1/me/softphone")).json()["sip_uri"] == "sip:1002@pbx.example.com"
        refused = await robot.post("/api/v1/me/softphone/nonce")
        assert refused.status_code == 403

    # The admin's read shows no secret.
    shown = await admin_client.get("/api/v1/users/bob/softphone")
    assert shown.status_code == 200
    assert SECRET not in shown.text and "secret" not in shown.json()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"ws_url": "ws://pbx.example.com/ws"}, "only allowed on localhost"),
        ({"ws_url": "http://pbx.example.com/ws"}, "wss://"),
        ({"sip_uri": "1002@pbx.example.com"}, "looks like sip:1001@"),
        ({"ice_servers": [{"urls": "http://stun.example.com"}]}, "stun:"),
        ({"ice_servers": [{"urls": "turn:turn.example.com"}]}, "username and a credential"),
        ({"secret": ""}, "secret"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_bad_settings_are_refused_in_words(
    hub: Hub, admin_client: httpx.AsyncClient, changes: dict[str, Any], words: str
) -> None:
    await add_user(hub, "bob", Role.AGENT)
    answer = await admin_client.put("/api/v1/users/bob/softphone", json=settings(**changes))
    assert answer.status_code in (400, 422), answer.text
    assert words in answer.json()["error"]["message"]


async def test_first_put_needs_a_secret_and_unknown_users_are_404(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    await add_user(hub, "bob", Role.AGENT)
    first = await admin_client.put("/api/v1/users/bob/softphone", json=settings(secret=None))
    assert first.status_code == 400
    assert "SIP secret" in first.json()["error"]["message"]
    ghost = await admin_client.put("/api/v1/users/ghost/softphone", json=settings())
    assert ghost.status_code == 404
    local = await admin_client.put("/api/v1/users/bob/softphone", json=settings(ws_url="ws://127.0.0.1:5066"))
    assert local.status_code == 200
    assert (await admin_client.delete("/api/v1/users/bob/softphone")).status_code == 204
    assert (await admin_client.get("/api/v1/users/bob/softphone")).status_code == 404
