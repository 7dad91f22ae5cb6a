"""Bad input gets a clear 4xx with {"error": {"code", "message"}}; never a 500."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from tests.conftest import PG_URL, add_user, api_token

from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.store.db import PING_AFTER_IDLE_SECONDS


async def _admin_auth(hub: Hub) -> dict[str, str]:
    return {"authorization": f"Bearer {await api_token(hub, 'admin')}"}


async def test_malformed_json_is_422_with_message(hub: Hub, client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/v1/users",
        content=b'{"name": "x", "role": ',
        headers={**await _admin_auth(hub), "content-type": "application/json"},
    )
    assert answer.status_code == 422
    body = answer.json()["error"]
    assert body["code"] == "invalid_request" and body["message"]


async def test_unknown_field_and_bad_role(hub: Hub, client: httpx.AsyncClient) -> None:
    auth = await _admin_auth(hub)
    answer = await client.post("/api/v1/users", json={"name": "x", "role": "boss"}, headers=auth)
    assert answer.status_code == 422
    assert "role" in answer.json()["error"]["message"]
    answer = await client.post("/api/v1/users", json={"name": "x", "role": "agent", "evil": 1}, headers=auth)
    assert answer.status_code == 422


async def test_oversized_body_is_413(hub: Hub, client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/v1/users",
        content=b"x" * (1_048_576 + 10),
        headers={**await _admin_auth(hub), "content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "body_too_large"


async def test_streamed_oversized_body_is_413(hub: Hub, client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"y" * 65536

    answer = await client.post(
        "/api/v1/users",
        content=chunks(),
        headers={**await _admin_auth(hub), "content-type": "application/json"},
    )
    assert answer.status_code == 413


async def test_create_user_api_and_duplicate(hub: Hub, client: httpx.AsyncClient) -> None:
    auth = await _admin_auth(hub)
    answer = await client.post("/api/v1/users", json={"name": "carol", "role": "manager"}, headers=auth)
    assert answer.status_code == 201
    assert answer.json()["user"]["role"] == "manager"
    assert len(answer.json()["password"]) >= 16
    again = await client.post("/api/v1/users", json={"name": "Carol", "role": "agent"}, headers=auth)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    listing = (await client.get("/api/v1/users", headers=auth)).json()
    assert {u["name"] for u in listing["items"]} == {"admin", "carol"}
    assert listing["next"] is None


async def test_weak_password_and_bad_name(hub: Hub, client: httpx.AsyncClient) -> None:
    auth = await _admin_auth(hub)
    weak = await client.post(
        "/api/v1/users", json={"name": "dan", "role": "agent", "password": "short"}, headers=auth
    )
    assert weak.status_code == 400 and "at least 10" in weak.json()["error"]["message"]
    bad = await client.post("/api/v1/users", json={"name": "-bad name", "role": "agent"}, headers=auth)
    assert bad.status_code == 400


async def test_agent_cannot_manage_users(hub: Hub, client: httpx.AsyncClient) -> None:
    await add_user(hub, "erin", Role.AGENT)
    auth = {"authorization": f"Bearer {await api_token(hub, 'erin')}"}
    assert (await client.get("/api/v1/users", headers=auth)).status_code == 403
    answer = await client.post("/api/v1/users", json={"name": "x", "role": "admin"}, headers=auth)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


async def test_manager_cannot_open_user_admin_page(hub: Hub, client: httpx.AsyncClient) -> None:
    await add_user(hub, "mia", Role.MANAGER)
    auth = {"authorization": f"Bearer {await api_token(hub, 'mia')}"}
    page = await client.get("/settings/users", headers={**auth, "accept": "text/html"})
    assert page.status_code == 403
    assert "Not allowed" in page.text


async def test_unknown_paths_are_404_json_and_page(client: httpx.AsyncClient) -> None:
    api = await client.get("/api/v1/nothing-here")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    page = await client.get("/nothing-here", headers={"accept": "text/html"})
    assert page.status_code == 404 and "Not found" in page.text


async def test_health_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    assert (await client.get("/readyz")).json()["status"] == "ready"
    spec = (await client.get("/api/v1/openapi.json")).json()
    assert "/api/v1/users" in spec["paths"] and "/api/v1/tokens" in spec["paths"]


async def test_a_broken_database_connection_is_503_then_recovers(
    backend: str, hub: Hub, client: httpx.AsyncClient
) -> None:
    """PostgreSQL restarted under the hub (its connections killed). A connection used moments ago
    is trusted: the request that meets it dead gets 503 database_unavailable, never a 500, and the
    next one works. A connection idle for a while is pinged first and replaced: no error at all."""
    if backend != "postgres":
        pytest.skip("a server-side connection kill needs PostgreSQL")
    auth = await _admin_auth(hub)
    database = make_url(hub.db.url).database

    async def kill_connections() -> None:
        admin = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await admin.close()
        assert killed >= 1

    assert (await client.get("/api/v1/users", headers=auth)).status_code == 200
    await kill_connections()
    statuses = []
    for _ in range(3):
        answer = await client.get("/api/v1/users", headers=auth)
        statuses.append(answer.status_code)
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "database_unavailable"
            assert answer.headers["retry-after"] == "1"
    assert set(statuses) <= {200, 503} and statuses[-1] == 200, statuses

    await kill_connections()
    await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
    assert (await client.get("/api/v1/users", headers=auth)).status_code == 200


TOO_BIG = str(2**31)  # one past the largest id an INTEGER column holds on PostgreSQL


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/api/v1/calls/{TOO_BIG}", None),
        ("PUT", f"/api/v1/calls/{TOO_BIG}/contact", {"contact_id": None}),
        ("PUT", "/api/v1/calls/1/contact", {"contact_id": 2**63}),
        ("POST", f"/api/v1/calls/{TOO_BIG}/hangup", None),
        ("GET", f"/api/v1/contacts/{TOO_BIG}", None),
        ("PATCH", f"/api/v1/contacts/{TOO_BIG}", {"name": "x"}),
        ("DELETE", f"/api/v1/contacts/{TOO_BIG}", None),
        ("GET", f"/api/v1/contacts/{TOO_BIG}/calls", None),
        ("POST", "/api/v1/contacts", {"name": "x", "company_id": 2**63}),
        ("POST", "/api/v1/contacts", {"name": "x", "company_id": 2**70}),
        ("POST", f"/api/v1/notifications/{TOO_BIG}/read", None),
        ("DELETE", f"/api/v1/tokens/{TOO_BIG}", None),
        ("GET", f"/api/v1/calls?contact_id={TOO_BIG}", None),
        ("GET", f"/api/v1/calls?company_id={TOO_BIG}", None),
        ("GET", f"/api/v1/agent-events?before={TOO_BIG}", None),
        ("GET", f"/calls/{TOO_BIG}", None),
        ("GET", f"/contacts/{TOO_BIG}", None),
    ],
)
async def test_ids_past_what_a_row_holds_are_4xx_not_500(
    hub: Hub, client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    answer = await client.request(method, path, json=body, headers=await _admin_auth(hub))
    assert answer.status_code in (400, 404, 422), (answer.status_code, answer.text)
    error = answer.json()["error"]
    assert error["message"] and error["code"] != "internal_error"


async def test_the_largest_id_is_simply_not_found(hub: Hub, client: httpx.AsyncClient) -> None:
    auth = await _admin_auth(hub)
    for path in ("/api/v1/calls/2147483647", "/api/v1/contacts/2147483647"):
        answer = await client.get(path, headers=auth)
        assert answer.status_code == 404, (path, answer.text)


async def test_renaming_a_tag_to_two_tags_is_400_with_words(hub: Hub, client: httpx.AsyncClient) -> None:
    auth = await _admin_auth(hub)
    made = await client.post("/api/v1/contacts", json={"name": "Tagged", "tags": ["x"]}, headers=auth)
    assert made.status_code == 201
    answer = await client.post("/api/v1/tags/rename", json={"old": "x", "new": "a,b"}, headers=auth)
    assert answer.status_code == 400
    assert "one tag" in answer.json()["error"]["message"]
    renamed = await client.post("/api/v1/tags/rename", json={"old": "x", "new": "y"}, headers=auth)
    assert renamed.status_code == 200 and renamed.json() == {"tag": "y", "contacts": 1}


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/api/v1/tokens", {"json": {"name": "a\u0000b"}}),
        ("POST", "/api/v1/contacts", {"json": {"name": "Ada\u0000"}}),
        ("GET", "/api/v1/calls?q=%00", {}),
        ("GET", "/api/v1/users/%00", {}),
    ],
)
async def test_text_with_a_nul_is_refused_with_words_on_both_databases(
    hub: Hub, client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, object]
) -> None:
    answer = await client.request(method, path, headers=await _admin_auth(hub), **kwargs)  # type: ignore[arg-type]
    assert answer.status_code == 400, answer.text
    assert "NUL" in answer.json()["error"]["message"]


async def test_a_form_with_a_nul_is_refused(admin_client: httpx.AsyncClient) -> None:
    token = admin_client.headers["x-csrf-token"]
    answer = await admin_client.post(
        "/contacts/new",
        content=f"csrf_token={token}&name=Ada%00".encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"},
    )
    assert answer.status_code == 400
    assert "NUL" in answer.text
