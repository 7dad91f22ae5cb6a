"""Editing, disabling, enabling and removing a PBX while the hub runs its link: the link follows
at once through the API, and within a watch round when `callbridge pbx …` changed it from
another process. A removed PBX's calls stay in the log under its name."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import add_user, api_token
from tests.pbx.asterisk.test_asterisk_hub import SECRET, asterisk_body, eventually

from callbridge.config import Settings
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.pbx.asterisk.simulator import AmiSimulator


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        default_region="US",
        login_delay_seconds=0,
        start_pbx_links=True,
        pbx_watch_seconds=0.1,
    )


async def _admin(hub: Hub) -> dict[str, str]:
    return {"authorization": f"Bearer {await api_token(hub, 'admin')}"}


async def test_edit_disable_enable_and_remove_drive_the_running_link(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    auth = await _admin(hub)
    async with (
        AmiSimulator(username="hub", secret=SECRET) as first,
        AmiSimulator(username="hub", secret="the-new-secret") as second,
    ):
        made = await client.post("/api/v1/pbxes", json=asterisk_body(first), headers=auth)
        assert made.status_code == 201, made.text
        await eventually(lambda: first.sessions == 1, limit=20)

        # Moved to another Asterisk with another secret: the old session ends, the new one starts.
        moved = await client.patch(
            "/api/v1/pbxes/office",
            json={"port": second.port, "secret": "the-new-secret"},
            headers=auth,
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["config"]["port"] == second.port
        assert moved.json()["config"]["trunks"] == ["trunk*"]  # untouched settings are kept
        assert "secret" not in moved.text
        await eventually(lambda: second.sessions == 1 and first.sessions == 0, limit=20)
        async with hub.db.unit() as repos:
            assert await repos.pbxes.secrets("office") == {"secret": "the-new-secret"}

        # A change without a secret keeps the stored one.
        kept = await client.patch("/api/v1/pbxes/office", json={"trunks": ["carrier*"]}, headers=auth)
        assert kept.status_code == 200, kept.text
        async with hub.db.unit() as repos:
            assert await repos.pbxes.secrets("office") == {"secret": "the-new-secret"}
        await eventually(lambda: second.sessions == 1, limit=20)

        disabled = await client.patch("/api/v1/pbxes/office", json={"enabled": False}, headers=auth)
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        await eventually(lambda: second.sessions == 0, limit=20)
        assert hub.links is not None and "office" not in hub.links.links
        logins = second.logins

        enabled = await client.patch("/api/v1/pbxes/office", json={"enabled": True}, headers=auth)
        assert enabled.status_code == 200 and enabled.json()["enabled"] is True
        await eventually(lambda: second.sessions == 1 and second.logins == logins + 1, limit=20)

        gone = await client.delete("/api/v1/pbxes/office", headers=auth)
        assert gone.status_code == 204
        await eventually(lambda: second.sessions == 0, limit=20)
        assert (await client.get("/api/v1/pbxes/office", headers=auth)).status_code == 404


async def test_bad_edits_are_refused_with_words_and_change_nothing(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    auth = await _admin(hub)
    async with AmiSimulator(username="hub", secret=SECRET) as sim:
        assert (await client.post("/api/v1/pbxes", json=asterisk_body(sim), headers=auth)).status_code == 201
        before = (await client.get("/api/v1/pbxes/office", headers=auth)).json()["config"]
        for body, status, words in [
            ({"client_id": "x"}, 400, "do not apply to a asterisk PBX"),
            ({"host": "not a host!"}, 400, "AMI host"),
            ({"port": 70000}, 422, ""),
            ({"colour": "red"}, 422, ""),
            ({"direction_variable": "1bad"}, 400, "dialplan variable"),
        ]:
            answer = await client.patch("/api/v1/pbxes/office", json=body, headers=auth)
            assert answer.status_code == status, (body, answer.text)
            assert words in answer.json()["error"]["message"], answer.text
        assert (await client.get("/api/v1/pbxes/office", headers=auth)).json()["config"] == before
        missing = await client.patch("/api/v1/pbxes/nowhere", json={"enabled": False}, headers=auth)
        assert missing.status_code == 404
        assert (await client.delete("/api/v1/pbxes/nowhere", headers=auth)).status_code == 404


@pytest.mark.parametrize("role", [Role.AGENT, Role.MANAGER])
async def test_only_an_admin_edits_or_removes_a_pbx(hub: Hub, client: httpx.AsyncClient, role: Role) -> None:
    auth = await _admin(hub)
    async with AmiSimulator(username="hub", secret=SECRET) as sim:
        assert (await client.post("/api/v1/pbxes", json=asterisk_body(sim), headers=auth)).status_code == 201
        await add_user(hub, "someone", role)
        theirs = {"authorization": f"Bearer {await api_token(hub, 'someone')}"}
        assert (
            await client.patch("/api/v1/pbxes/office", json={"enabled": False}, headers=theirs)
        ).status_code == 403
        assert (await client.delete("/api/v1/pbxes/office", headers=theirs)).status_code == 403
        assert (await client.get("/api/v1/pbxes/office", headers=auth)).json()["enabled"] is True


async def test_a_removed_pbx_keeps_its_calls_and_drops_its_extension_map(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    auth = await _admin(hub)
    async with AmiSimulator(username="hub", secret=SECRET) as sim:
        assert (await client.post("/api/v1/pbxes", json=asterisk_body(sim), headers=auth)).status_code == 201
        await add_user(hub, "alice", Role.AGENT)
        mapped = await client.put("/api/v1/extensions/office/1001", json={"user": "alice"}, headers=auth)
        assert mapped.status_code == 200, mapped.text
        await eventually(lambda: sim.sessions == 1, limit=20)
        call_id = await sim.place_call(
            "inbound_answered", caller="+14155550101", extension="1001", ring=0.1, talk=0.1
        )

        async def ended() -> dict[str, Any] | None:
            items = (await client.get("/api/v1/calls", headers=auth)).json()["items"]
            return next((c for c in items if c["pbx_call_id"] == call_id and c["ended_at"]), None)

        await eventually(ended, limit=20)
        assert (await client.delete("/api/v1/pbxes/office", headers=auth)).status_code == 204
        items = (await client.get("/api/v1/calls", headers=auth)).json()["items"]
        assert [(c["pbx"], c["pbx_call_id"], c["answered_by_user"]) for c in items] == [
            ("office", call_id, "alice")
        ]
        extensions = (await client.get("/api/v1/extensions", headers=auth)).json()["items"]
        assert [e for e in extensions if e["pbx"] == "office"] == []


async def test_the_settings_page_edits_disables_and_deletes_only_when_confirmed(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    client = admin_client
    token = client.headers["x-csrf-token"]
    async with AmiSimulator(username="hub", secret=SECRET) as sim:
        assert (await client.post("/api/v1/pbxes", json=asterisk_body(sim))).status_code == 201
        page = await client.get("/settings/pbxes/office")
        assert page.status_code == 200
        assert "0 calls in the log" in page.text and SECRET not in page.text

        saved = await client.post(
            "/settings/pbxes/office",
            data={
                "csrf_token": token,
                "host": "127.0.0.1",
                "port": str(sim.port),
                "username": "hub",
                "secret": "",
                "trunks": "trunk* carrier*",
            },
        )
        assert saved.status_code == 303
        async with hub.db.unit() as repos:
            record = await repos.pbxes.get("office")
            assert record.config["trunks"] == ["trunk*", "carrier*"]
            assert await repos.pbxes.secrets("office") == {"secret": SECRET}  # empty field: kept

        bad = await client.post("/settings/pbxes/office", data={"csrf_token": token, "host": "bad host"})
        assert bad.status_code == 400 and "AMI host" in bad.text

        off = await client.post(
            "/settings/pbxes/office/enabled", data={"csrf_token": token, "enabled": "false"}
        )
        assert off.status_code == 303
        listing = await client.get("/settings/pbxes")
        assert "disabled" in listing.text and "its agent is refused" in listing.text

        unconfirmed = await client.post("/settings/pbxes/office/delete", data={"csrf_token": token})
        assert unconfirmed.status_code == 400 and "nothing was deleted" in unconfirmed.text
        assert (await client.get("/api/v1/pbxes/office")).status_code == 200

        deleted = await client.post(
            "/settings/pbxes/office/delete", data={"csrf_token": token, "confirm": "yes"}
        )
        assert deleted.status_code == 303
        assert (await client.get("/api/v1/pbxes/office")).status_code == 404


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CALLBRIDGE_DATA_DIR": str(settings.data_dir),
        "CALLBRIDGE_DATABASE_URL": settings.database_url,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "callbridge", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def test_the_cli_edits_disables_enables_and_removes_and_a_running_hub_follows(
    hub: Hub, client: httpx.AsyncClient, settings: Settings
) -> None:
    async def cli(*args: str, rc: int = 0) -> str:
        done = await asyncio.to_thread(_cli, settings, "pbx", *args)
        assert done.returncode == rc, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout + done.stderr

    async with (
        AmiSimulator(username="hub", secret=SECRET) as first,
        AmiSimulator(username="hub", secret="the-new-secret") as second,
    ):
        await cli(
            "add",
            "asterisk",
            "office",
            "--host",
            "127.0.0.1",
            "--port",
            str(first.port),
            "--username",
            "hub",
            "--secret",
            SECRET,
            "--trunk",
            "trunk*",
        )
        await eventually(lambda: first.sessions == 1, limit=20)
        assert "nothing to change" in await cli("edit", "office", rc=2)
        assert "do not apply" in await cli("edit", "office", "--client-id", "x", rc=1)
        await cli("edit", "office", "--port", str(second.port), "--secret", "the-new-secret")
        await eventually(lambda: second.sessions == 1 and first.sessions == 0, limit=20)
        assert "disabled" in await cli("disable", "office")
        await eventually(lambda: second.sessions == 0, limit=20)
        await cli("enable", "office")
        await eventually(lambda: second.sessions == 1, limit=20)
        refused = await cli("remove", "office", rc=2)
        assert "Confirm with --yes" in refused and "stay in the log" in refused
        assert second.sessions == 1
        await cli("remove", "office", "--yes")
        await eventually(lambda: second.sessions == 0, limit=20)
        assert "office" not in await cli("list")
        assert "no PBX named" in await cli("disable", "office", rc=1)
