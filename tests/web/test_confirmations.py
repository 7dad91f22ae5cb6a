"""Destructive page actions say what they will do and wait for a confirmation."""

from __future__ import annotations

import httpx
from tests.conftest import add_user

from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.services.pbxes import AsteriskSettings, add_pbx

HTML = {"accept": "text/html"}


async def test_moving_an_extension_to_another_user_is_said_and_confirmed(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    token = admin_client.headers["x-csrf-token"]
    await add_user(hub, "alice", Role.AGENT)
    await add_user(hub, "bob", Role.AGENT)
    async with hub.db.unit() as repos:
        await add_pbx(repos.pbxes, "office", PbxKind.ASTERISK, AsteriskSettings(agent=True))

    async def holder() -> str:
        async with hub.db.unit() as repos:
            return next(m.user_name for m in await repos.extensions.all() if m.extension == "1001")

    form = {"csrf_token": token, "pbx": "office", "extension": "1001", "user": "alice"}
    assert (await admin_client.post("/settings/extensions", data=form, headers=HTML)).status_code == 303
    asked = await admin_client.post("/settings/extensions", data={**form, "user": "bob"}, headers=HTML)
    assert asked.status_code == 409
    assert "Extension 1001 on office moves from alice to bob." in asked.text
    assert await holder() == "alice"  # nothing moved yet
    # Mapping it again to its own holder asks nothing.
    again = await admin_client.post("/settings/extensions", data=form, headers=HTML)
    assert again.status_code == 303
    moved = await admin_client.post(
        "/settings/extensions", data={**form, "user": "bob", "confirm": "yes"}, headers=HTML
    )
    assert moved.status_code == 303
    assert await holder() == "bob"
