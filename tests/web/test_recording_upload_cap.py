"""A recording whose agent announces a file over the hub's cap: refused (413) and the recording
``failed`` with the reason, kept after the answer (not left ``pending`` for ever)."""

from __future__ import annotations

import httpx
from tests.agent.conftest import add_agent_pbx
from tests.conftest import add_user, api_token
from tests.web.test_recordings_api import recorded_call

from callbridge.domain.users import Role
from callbridge.hub import Hub

REFERENCE = "/var/spool/asterisk/monitor/2026/03/01/in-1002-big.wav"


async def test_a_recording_over_the_hubs_cap_is_failed_with_the_reason(app: object, hub: Hub) -> None:
    assert hub.uploads is not None
    hub.uploads.max_bytes = 1000
    agent_token = await add_agent_pbx(hub, "main")
    bob = await add_user(hub, "bob", Role.AGENT)
    await add_user(hub, "dave", Role.AGENT)  # owns nothing
    async with hub.db.unit() as repos:
        await repos.extensions.map("main", "1002", bob.id)
    call_id = await recorded_call(hub, "big1", 0, REFERENCE)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]

    def client(token: str) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"}
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)

    async with (
        client(agent_token) as agent,
        client(await api_token(hub, "bob")) as bob_api,
        client(await api_token(hub, "dave")) as dave_api,
    ):
        before = (await bob_api.get(f"/api/v1/calls/{call_id}")).json()["recording"]
        assert before["status"] == "pending"
        announce = {"call_id": "big1", "reference": REFERENCE, "size": 5000, "sha256": "a" * 64}
        big = await agent.post("/agent/v1/recordings", json=announce)
        assert big.status_code == 413, big.text
        assert "over the hub's cap of 1000" in big.json()["error"]["message"]

        after = (await bob_api.get(f"/api/v1/calls/{call_id}")).json()["recording"]
        assert after["status"] == "failed"
        assert after["reason"] == "the file has 5000 bytes, over the hub's cap of 1000"
        assert after["audio_url"] is None
        # Announced again: still failed, and it takes no upload.
        again = await agent.post("/agent/v1/recordings", json={**announce, "size": 500})
        assert again.status_code == 404, again.text
        assert (await dave_api.get(f"/api/v1/calls/{call_id}")).status_code == 404
