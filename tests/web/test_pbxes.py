"""PBX settings over the API and pages, secrets at rest, and the Yeastar webhook endpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from tests.conftest import add_user, api_token

from callbridge.domain.users import Role
from callbridge.hub import Hub

ASTERISK = {
    "name": "office",
    "kind": "asterisk",
    "host": "127.0.0.1",
    "port": 5038,
    "username": "hub",
    "secret": "ami-secret-value",
    "trunks": ["trunk-*"],
}
YEASTAR = {
    "name": "cloud",
    "kind": "yeastar",
    "base_url": "http://127.0.0.1:9",
    "client_id": "cid",
    "client_secret": "client-secret-value",
    "webhook_secret": "webhook-secret-value",
}


async def _admin(hub: Hub) -> dict[str, str]:
    return {"authorization": f"Bearer {await api_token(hub, 'admin')}"}


async def _raw_secrets(hub: Hub) -> str:
    async with hub.db.unit() as repos:
        rows = (await repos.session.execute(text("SELECT config, secrets FROM pbxes"))).all()
    return " ".join(f"{r[0]} {r[1]}" for r in rows)


async def test_add_and_list_pbxes_secrets_encrypted(hub: Hub, client: httpx.AsyncClient) -> None:
    auth = await _admin(hub)
    made = await client.post("/api/v1/pbxes", json=ASTERISK, headers=auth)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["kind"] == "asterisk" and body["config"]["host"] == "127.0.0.1"
    assert "secret" not in body["config"] and "ami-secret-value" not in made.text
    cloud = await client.post("/api/v1/pbxes", json=YEASTAR, headers=auth)
    assert cloud.status_code == 201
    url = cloud.json()["webhook_url"]
    assert url.startswith("http") and "/webhooks/yeastar/" in url and len(url.rsplit("/", 1)[1]) >= 24
    listing = (await client.get("/api/v1/pbxes", headers=auth)).json()
    assert [p["name"] for p in listing["items"]] == ["cloud", "office"]
    raw = await _raw_secrets(hub)
    for secret in ("ami-secret-value", "client-secret-value", "webhook-secret-value"):
        assert secret not in raw
    async with hub.db.unit() as repos:
        assert (await repos.pbxes.secrets("office")) == {"secret": "ami-secret-value"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": ""}, "AMI host"),
        ({"secret": ""}, "AMI secret"),
        ({"port": 70000}, "between 1 and 65535"),
        ({"name": "bad name!"}, "PBX name"),
        ({"direction_variable": "1bad"}, "variable"),
    ],
)
async def test_bad_asterisk_settings_are_400(
    hub: Hub, client: httpx.AsyncClient, change: dict[str, object], message: str
) -> None:
    answer = await client.post("/api/v1/pbxes", json={**ASTERISK, **change}, headers=await _admin(hub))
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]


async def test_duplicate_and_non_admin(hub: Hub, client: httpx.AsyncClient) -> None:
    auth = await _admin(hub)
    assert (await client.post("/api/v1/pbxes", json=ASTERISK, headers=auth)).status_code == 201
    assert (await client.post("/api/v1/pbxes", json=ASTERISK, headers=auth)).status_code == 409
    await add_user(hub, "mgr", Role.MANAGER)
    manager = {"authorization": f"Bearer {await api_token(hub, 'mgr')}"}
    assert (await client.post("/api/v1/pbxes", json=YEASTAR, headers=manager)).status_code == 403
    assert (await client.get("/api/v1/pbxes", headers=manager)).status_code == 403


async def test_webhook_needs_webhook_secret(hub: Hub, client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/v1/pbxes", json={**YEASTAR, "webhook_secret": ""}, headers=await _admin(hub)
    )
    assert answer.status_code == 400 and "webhook secret" in answer.json()["error"]["message"]


async def test_yeastar_time_zone_is_checked_and_kept(hub: Hub, client: httpx.AsyncClient) -> None:
    admin = await _admin(hub)
    for bad in ("Mars/Olympus", "../../etc/passwd", ""):
        answer = await client.post("/api/v1/pbxes", json={**YEASTAR, "timezone": bad}, headers=admin)
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]["code"] and "time zone" in answer.json()["error"]["message"]
    made = await client.post("/api/v1/pbxes", json={**YEASTAR, "timezone": "Europe/Berlin"}, headers=admin)
    assert made.status_code == 201, made.text
    async with hub.db.unit() as repos:
        config = (await repos.session.execute(text("SELECT config FROM pbxes"))).scalar_one()
    assert "Europe/Berlin" in str(config)


def _sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@pytest.fixture
async def webhook(hub: Hub, client: httpx.AsyncClient) -> str:
    """A Yeastar PBX whose link runs in the app, as it does after `callbridge serve` starts."""
    made = await client.post("/api/v1/pbxes", json=YEASTAR, headers=await _admin(hub))
    record_key = made.json()["webhook_url"].rsplit("/", 1)[1]
    async with hub.db.unit() as repos:
        await hub.start_link(await repos.pbxes.get("cloud"))
    return f"/webhooks/yeastar/{record_key}"


def _event(call_id: str, status: str) -> bytes:
    member = {
        "inbound": {
            "from": "4155550100",
            "to": "2002",
            "trunk_name": "t1",
            "channel_id": "PJSIP/trunk-t1-endpoint-00000001",
            "member_status": status,
            "call_path": "",
        }
    }
    msg = json.dumps({"call_id": call_id, "members": [member]})
    return json.dumps({"type": 30011, "sn": "SN1", "msg": msg}).encode()


async def test_signed_webhook_is_accepted_and_retry_is_duplicate(
    client: httpx.AsyncClient, webhook: str
) -> None:
    body = _event("1700000000.1", "ALERT")
    first = await client.post(
        webhook, content=body, headers={"x-signature": _sign(body, "webhook-secret-value")}
    )
    assert first.status_code == 200, first.text
    assert first.json()["errcode"] == 0
    again = await client.post(
        webhook, content=body, headers={"x-signature": _sign(body, "webhook-secret-value")}
    )
    assert again.status_code == 200
    assert again.json()["accepted"] == 0  # a PBX retry changes nothing


@pytest.mark.parametrize(
    ("signature", "body", "status"),
    [
        (None, _event("1.1", "ALERT"), 401),
        ("forged", _event("1.1", "ALERT"), 401),
        ("wrong-secret", _event("1.1", "ALERT"), 401),
        ("good", b"{not json", 400),
        ("good", json.dumps({"type": "x", "msg": 5}).encode(), 400),
    ],
)
async def test_bad_webhooks_are_refused(
    client: httpx.AsyncClient, webhook: str, signature: str | None, body: bytes, status: int
) -> None:
    headers = {}
    if signature == "good":
        headers["x-signature"] = _sign(body, "webhook-secret-value")
    elif signature == "wrong-secret":
        headers["x-signature"] = _sign(body, "another-secret")
    elif signature is not None:
        headers["x-signature"] = signature
    answer = await client.post(webhook, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]


async def test_oversized_webhook_is_413(client: httpx.AsyncClient, webhook: str) -> None:
    body = b"{" + b" " * 2_000_000 + b"}"
    answer = await client.post(
        webhook, content=body, headers={"x-signature": _sign(body, "webhook-secret-value")}
    )
    assert answer.status_code == 413


async def test_streamed_oversized_webhook_is_413(client: httpx.AsyncClient, webhook: str) -> None:
    """No Content-Length, chunks past the hub's body limit: the webhook endpoint (served ahead of
    the app's middleware) counts them itself."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 65536

    answer = await client.post(webhook, content=chunks(), headers={"x-signature": "whatever"})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "body_too_large"
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_unknown_webhook_key_is_404(client: httpx.AsyncClient) -> None:
    answer = await client.post("/webhooks/yeastar/not-a-key", content=b"{}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_settings_page_adds_pbx(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    token = admin_client.headers["x-csrf-token"]
    answer = await admin_client.post(
        "/settings/pbxes",
        data={
            **{k: str(v) for k, v in ASTERISK.items() if k != "trunks"},
            "trunks": "trunk-* gw*",
            "csrf_token": token,
        },
    )
    assert answer.status_code == 303
    page = await admin_client.get("/settings/pbxes", headers={"accept": "text/html"})
    assert "office" in page.text and "trunk-*, gw*" in page.text
    bad = await admin_client.post(
        "/settings/pbxes", data={"kind": "asterisk", "name": "x", "csrf_token": token}
    )
    assert bad.status_code == 400 and "AMI host" in bad.text


async def test_webhook_over_the_yeastar_limit_is_413(client: httpx.AsyncClient, webhook: str) -> None:
    body = b'{"type": 30011, "pad": "' + b"x" * 100_000 + b'"}'
    answer = await client.post(
        webhook, content=body, headers={"x-signature": _sign(body, "webhook-secret-value")}
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "yeastar_webhook_too_large"


async def test_pbx_added_by_another_process_is_picked_up_while_running(settings: object) -> None:
    from tests.conftest import FAST_HASHER

    from callbridge.domain.pbx import PbxKind
    from callbridge.web.app import create_app

    live = settings.model_copy(update={"start_pbx_links": True, "pbx_watch_seconds": 0.05})  # type: ignore[attr-defined]
    hub = Hub.build(live, hasher=FAST_HASHER)
    app = create_app(hub=hub)
    async with app.router.lifespan_context(app):
        assert hub.webhook_keys == {}
        # What `callbridge pbx add yeastar …` does in its own process: a row, nothing else.
        async with hub.db.unit() as repos:
            record = await repos.pbxes.add(
                "later",
                PbxKind.YEASTAR,
                {"base_url": "http://127.0.0.1:9", "client_id": "c", "events": "webhook"},
                {"client_secret": "s", "webhook_secret": "w"},
            )
        for _ in range(100):
            if record.webhook_key in hub.webhook_keys:
                break
            await asyncio.sleep(0.02)
        assert hub.webhook_keys.get(record.webhook_key) == "later"
        assert hub.links is not None and "later" in hub.links.links


async def test_webhook_answers_like_an_api_route_without_a_session(
    client: httpx.AsyncClient, webhook: str
) -> None:
    body = _event("1700000000.9", "ALERT")
    answer = await client.post(
        webhook, content=body, headers={"x-signature": _sign(body, "webhook-secret-value")}
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-frame-options"] == "DENY"  # still inside the security headers
    assert "set-cookie" not in answer.headers  # a PBX gets no session
    forged = await client.post(webhook, content=body, headers={"x-signature": "forged"})
    assert forged.status_code == 401 and forged.headers["www-authenticate"] == "Bearer"
    assert forged.json()["error"]["code"] == "yeastar_webhook_signature_invalid"
    wrong = await client.get(webhook)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


async def test_yeastar_queue_numbers_are_checked_in_words(hub: Hub, client: httpx.AsyncClient) -> None:
    """A Yeastar PBX's queue numbers: digits, each with a name (the number when none is given,
    no two alike); anything else is a 400 that says what is wrong, and nothing is stored."""
    admin = await _admin(hub)
    for bad, words in (
        ({"64a0": "sales"}, "queue number '64a0' is not valid"),
        ({"": "sales"}, "queue number '' is not valid"),
        ({"6400": "big sales"}, "queue name 'big sales'"),
        ({"6400": "a/b"}, "queue name 'a/b'"),
        ({"6400": "sales", "6401": "sales"}, "both named 'sales'"),
        ({"6400": "", "6401": "6400"}, "both named '6400'"),
    ):
        answer = await client.post("/api/v1/pbxes", json={**YEASTAR, "queues": bad}, headers=admin)
        assert answer.status_code == 400, (bad, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_input" and words in error["message"], (bad, error)
    assert (await client.get("/api/v1/pbxes", headers=admin)).json()["items"] == []
    made = await client.post(
        "/api/v1/pbxes", json={**YEASTAR, "queues": {"6400": "sales", "6401": ""}}, headers=admin
    )
    assert made.status_code == 201, made.text
    assert made.json()["config"]["queues"] == {"6400": "sales", "6401": "6401"}
    bad_edit = await client.patch("/api/v1/pbxes/cloud", json={"queues": {"x": ""}}, headers=admin)
    assert bad_edit.status_code == 400 and "digits only" in bad_edit.json()["error"]["message"]
    # An Asterisk has app_queue's own names: the setting is not for it.
    office = await client.post("/api/v1/pbxes", json=ASTERISK, headers=admin)
    assert office.status_code == 201
    wrong = await client.patch("/api/v1/pbxes/office", json={"queues": {"6400": ""}}, headers=admin)
    assert wrong.status_code == 400 and "do not apply" in wrong.json()["error"]["message"]


async def test_editing_a_yeastar_keeps_its_time_zone_and_queues_unless_given(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    admin = await _admin(hub)
    made = await client.post(
        "/api/v1/pbxes",
        json={**YEASTAR, "timezone": "Europe/Berlin", "queues": {"6400": "sales"}},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    edited = await client.patch("/api/v1/pbxes/cloud", json={"client_id": "cid2"}, headers=admin)
    assert edited.status_code == 200, edited.text
    config = edited.json()["config"]
    assert (config["client_id"], config["timezone"], config["queues"]) == (
        "cid2",
        "Europe/Berlin",
        {"6400": "sales"},
    )
    edited = await client.patch(
        "/api/v1/pbxes/cloud", json={"queues": {"6401": "support"}, "timezone": "Asia/Dubai"}, headers=admin
    )
    config = edited.json()["config"]
    assert (config["timezone"], config["queues"]) == ("Asia/Dubai", {"6401": "support"})
    cleared = await client.patch("/api/v1/pbxes/cloud", json={"queues": {}}, headers=admin)
    assert cleared.json()["config"]["queues"] == {}


async def test_settings_pages_set_a_yeastars_queue_numbers(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    token = admin_client.headers["x-csrf-token"]
    form = {k: v for k, v in YEASTAR.items()}
    answer = await admin_client.post(
        "/settings/pbxes", data={**form, "queues": "6400=sales, 6401", "csrf_token": token}
    )
    assert answer.status_code == 303, answer.text
    page = await admin_client.get("/settings/pbxes/cloud", headers={"accept": "text/html"})
    assert 'value="6400=sales 6401"' in page.text
    bad = await admin_client.post(
        "/settings/pbxes/cloud", data={"queues": "6400=sales 64x", "csrf_token": token}
    )
    assert bad.status_code == 400 and "queue number &#39;64x&#39; is not valid" in bad.text
    edited = await admin_client.post(
        "/settings/pbxes/cloud", data={"queues": "6402=support", "csrf_token": token}
    )
    assert edited.status_code == 303
    async with hub.db.unit() as repos:
        record = await repos.pbxes.get("cloud")
    assert record.config["queues"] == {"6402": "support"}
