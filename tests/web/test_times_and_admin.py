"""Times in each user's zone (pages, CSV export; the API stays UTC), phone numbers in the hub's
national format, role change and password reset on Settings → Users, validation as sentences."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

import httpx
import pytest
from tests.conftest import ADMIN_PASSWORD, add_user, api_token, csrf_of, sign_in
from tests.web.test_calls_api import T0, feed, inbound

from callbridge.config import Settings
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.web.errors import validation_sentence
from callbridge.web.filters import format_phone, format_when

HTML = {"accept": "text/html"}


def test_one_friendly_format_in_the_given_zone() -> None:
    moment = datetime(2025, 3, 1, 9, 5, 7, 123456, tzinfo=UTC)
    assert format_when(moment, "Europe/Berlin") == "2025-03-01 10:05:07 CET"
    assert format_when(moment, "America/New_York", "minute") == "2025-03-01 04:05 EST"
    assert format_when(moment, "Asia/Kolkata", "time") == "14:35:07"
    assert format_when(moment, "UTC") == "2025-03-01 09:05:07 UTC"


def test_numbers_national_in_the_hubs_region_international_elsewhere() -> None:
    assert format_phone("+14155550100", "US") == "(415) 555-0100"
    assert format_phone("+14155550100", "DE") == "+1 415-555-0100"
    assert format_phone("+493012345678", "DE") == "030 12345678"
    assert format_phone("+493012345678", "US") == "+49 30 12345678"
    assert format_phone("1001", "US") == "1001"  # extensions as stored
    assert format_phone("anonymous", "US") == "anonymous"


def test_settings_time_zone_is_checked() -> None:
    assert Settings(time_zone="Europe/Berlin").time_zone == "Europe/Berlin"
    with pytest.raises(ValueError, match="time zone"):
        Settings(time_zone="Mars/Olympus")


async def test_me_has_a_time_zone_that_the_user_sets(hub: Hub, client: httpx.AsyncClient) -> None:
    await add_user(hub, "nobody", Role.AGENT)  # owns nothing: it changes only its own zone
    auth = {"authorization": f"Bearer {await api_token(hub, 'nobody')}"}
    me = (await client.get("/api/v1/me", headers=auth)).json()
    assert (me["time_zone"], me["time_zone_is_default"]) == (hub.settings.time_zone, True)
    changed = await client.patch("/api/v1/me", json={"time_zone": "Asia/Kolkata"}, headers=auth)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["time_zone"], changed.json()["time_zone_is_default"]) == ("Asia/Kolkata", False)
    assert (await client.get("/api/v1/me", headers=auth)).json()["time_zone"] == "Asia/Kolkata"
    for bad in ("Mars/Olympus", "../../etc/passwd", "x" * 65):
        refused = await client.patch("/api/v1/me", json={"time_zone": bad}, headers=auth)
        assert refused.status_code in (400, 422), (bad, refused.text)
        assert (
            "time zone" in refused.json()["error"]["message"]
            or "too long" in refused.json()["error"]["message"]
        )
    back = await client.patch("/api/v1/me", json={"time_zone": None}, headers=auth)
    assert back.json()["time_zone"] == hub.settings.time_zone and back.json()["time_zone_is_default"]
    # Other users are untouched.
    admin = {"authorization": f"Bearer {await api_token(hub, 'admin')}"}
    assert (await client.get("/api/v1/me", headers=admin)).json()["time_zone_is_default"] is True


async def test_pages_show_times_in_the_users_zone_and_the_api_stays_utc(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    await feed(hub, inbound("z1", "+14155550123", 5))  # started 2025-03-01 09:05:00 UTC
    csrf = admin_client.headers["x-csrf-token"]
    saved = await admin_client.post(
        "/account/time-zone", data={"time_zone": "Asia/Kolkata", "csrf_token": csrf}
    )
    assert saved.status_code == 303
    listing = await admin_client.get("/calls", headers=HTML)
    assert "2025-03-01 14:35:00 IST" in listing.text
    assert 'data-time-zone="Asia/Kolkata"' in listing.text
    assert "(415) 555-0123" in listing.text  # the hub's region (US): national format
    call = (await admin_client.get("/api/v1/calls")).json()["items"][0]
    assert call["started_at"].startswith("2025-03-01T09:05:00")  # the API keeps UTC
    detail = await admin_client.get(f"/calls/{call['id']}", headers=HTML)
    assert "2025-03-01 14:35:00 IST" in detail.text
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{6}", detail.text)  # no raw ISO with microseconds
    assert '<time datetime="2025-03-01T09:05:00Z">' in detail.text
    account = await admin_client.get("/account", headers=HTML)
    assert '<option value="Asia/Kolkata" selected>' in account.text
    bad = await admin_client.post(
        "/account/time-zone", data={"time_zone": "Mars/Olympus", "csrf_token": csrf}
    )
    assert bad.status_code == 400 and "unknown time zone" in bad.text


async def test_csv_export_says_its_zone_and_writes_offsets(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    await feed(hub, inbound("z2", "+14155550124", 0, answered_by="1001"))
    default = await admin_client.get("/api/v1/calls/export.csv")
    row = next(csv.DictReader(io.StringIO(default.text)))
    assert row["time_zone"] == hub.settings.time_zone == "UTC"
    assert row["started_at"] == "2025-03-01T09:00:00+00:00"
    berlin = await admin_client.get("/calls/export.csv", params={"tz": "Europe/Berlin"})
    row = next(csv.DictReader(io.StringIO(berlin.text)))
    assert (row["time_zone"], row["started_at"]) == ("Europe/Berlin", "2025-03-01T10:00:00+01:00")
    assert datetime.fromisoformat(row["started_at"]) == T0
    # Without tz: the user's own zone.
    async with hub.db.unit() as repos:
        admin = await hub.accounts(repos).get_user("admin")
        await hub.accounts(repos).set_time_zone(admin, "America/New_York")
    mine = next(csv.DictReader(io.StringIO((await admin_client.get("/calls/export.csv")).text)))
    assert (mine["time_zone"], mine["started_at"]) == ("America/New_York", "2025-03-01T04:00:00-05:00")
    refused = await admin_client.get("/api/v1/calls/export.csv", params={"tz": "Nowhere/Land"})
    assert refused.status_code == 400 and "time zone" in refused.json()["error"]["message"]


async def test_admin_changes_a_role_on_the_users_page(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    await add_user(hub, "carol", Role.AGENT)
    csrf = admin_client.headers["x-csrf-token"]
    page = await admin_client.get("/settings/users", headers=HTML)
    assert 'action="/settings/users/carol/role"' in page.text
    changed = await admin_client.post(
        "/settings/users/carol/role", data={"role": "manager", "csrf_token": csrf}
    )
    assert changed.status_code == 303
    async with hub.db.unit() as repos:
        assert (await hub.accounts(repos).get_user("carol")).role is Role.MANAGER
    bad = await admin_client.post(
        "/settings/users/carol/role", data={"role": "boss", "csrf_token": csrf}, headers=HTML
    )
    assert bad.status_code == 400 and "unknown role" in bad.text
    # The last active admin stays an admin.
    last = await admin_client.post(
        "/settings/users/admin/role", data={"role": "agent", "csrf_token": csrf}, headers=HTML
    )
    assert last.status_code == 400 and "last active admin" in last.text
    async with hub.db.unit() as repos:
        assert (await hub.accounts(repos).get_user("admin")).role is Role.ADMIN


async def test_admin_resets_a_password_shown_once(
    hub: Hub, app: object, admin_client: httpx.AsyncClient
) -> None:
    await add_user(hub, "dave", Role.AGENT, "old-password-1")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as dave:
        await sign_in(dave, "dave", "old-password-1")
        assert (await dave.get("/account", headers=HTML)).status_code == 200
        csrf = admin_client.headers["x-csrf-token"]
        reset = await admin_client.post("/settings/users/dave/password", data={"csrf_token": csrf})
        assert reset.status_code == 303
        page = await admin_client.get("/settings/users", headers=HTML)
        shown = re.search(r"New password for dave, shown once: (\S+)</p>", page.text)
        assert shown, page.text
        again = await admin_client.get("/settings/users", headers=HTML)
        assert shown.group(1) not in again.text  # once
        # Dave's open session ended; the old password fails, the new one works.
        assert (await dave.get("/account", headers=HTML, follow_redirects=False)).status_code == 303
        token = await csrf_of(dave)
        old = await dave.post(
            "/login", data={"username": "dave", "password": "old-password-1", "csrf_token": token}
        )
        assert old.status_code != 303
        await sign_in(dave, "dave", shown.group(1))
    own = await admin_client.post(
        "/settings/users/admin/password",
        data={"csrf_token": admin_client.headers["x-csrf-token"]},
        headers=HTML,
    )
    assert own.status_code == 400 and "Account page" in own.text
    assert (await admin_client.get("/settings/users", headers=HTML)).status_code == 200  # still signed in
    async with hub.db.unit() as repos:
        assert (await hub.accounts(repos).authenticate("admin", ADMIN_PASSWORD, "127.0.0.9")).name == "admin"


async def test_an_agent_cannot_change_roles_or_reset_passwords(hub: Hub, client: httpx.AsyncClient) -> None:
    await add_user(hub, "erin", Role.AGENT)
    csrf = await sign_in(client, "erin", "user-password-1")
    for path, data in (
        ("/settings/users/admin/role", {"role": "agent"}),
        ("/settings/users/admin/password", {}),
    ):
        answer = await client.post(path, data={**data, "csrf_token": csrf}, headers=HTML)
        assert answer.status_code == 403, path
    async with hub.db.unit() as repos:
        admin = await hub.accounts(repos).get_user("admin")
        assert admin.role is Role.ADMIN
        assert (await hub.accounts(repos).authenticate("admin", ADMIN_PASSWORD, "127.0.0.9")).id == admin.id


async def test_form_validation_reads_as_sentences(hub: Hub, admin_client: httpx.AsyncClient) -> None:
    csrf = admin_client.headers["x-csrf-token"]
    page = await admin_client.post(
        "/settings/users", data={"name": "x" * 65, "role": "agent", "csrf_token": csrf}, headers=HTML
    )
    assert page.status_code == 422
    assert "The user name is too long: it has at most 64 characters." in page.text
    assert "String should have" not in page.text
    api = await admin_client.get("/api/v1/calls", params={"limit": "lots"})
    assert api.json()["error"]["message"] == "The limit must be a whole number."


def test_validation_sentences() -> None:
    def said(kind: str, loc: tuple[str, ...], **ctx: object) -> str:
        return validation_sentence({"type": kind, "loc": loc, "msg": "raw", "ctx": ctx})

    assert said("missing", ("body", "role")) == "The role is required."
    assert said("less_than_equal", ("query", "limit"), le=500) == "The limit must be at most 500."
    assert said("extra_forbidden", ("body", "evil")) == "The evil is not a field this request knows."
    assert said("something_new", ("body", "x")) == "The x: raw."
