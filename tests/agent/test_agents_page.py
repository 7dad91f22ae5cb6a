"""The agents settings page: health, one-time token, settings form, bans, forwarded events."""

from __future__ import annotations

import re

import httpx
from tests.agent.conftest import add_agent_pbx

from callbridge.hub import Hub
from callbridge.services.agents import Ban, hash_agent_token


async def test_page_shows_agents_issues_a_token_once_and_saves_settings(
    hub: Hub, admin_client: httpx.AsyncClient
) -> None:
    await add_agent_pbx(hub)
    async with hub.db.unit() as repos:
        await repos.agents.replace_bans("office", [Ban("office", "203.0.113.9", "10 failures", 10)])

    page = await admin_client.get("/settings/agents", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert 'id="agent-office"' in page.text and "not connected" in page.text
    assert "203.0.113.9" in page.text

    rotated = await admin_client.post("/settings/agents/office/token", headers={"accept": "text/html"})
    assert rotated.status_code == 200
    match = re.search(r'<code id="new-token">(cbagent_[^<]+)</code>', rotated.text)
    assert match, rotated.text
    async with hub.db.unit() as repos:
        found = await repos.agents.by_token_hash(hash_agent_token(match.group(1)))
    assert found is not None and found.pbx == "office"
    again = await admin_client.get("/settings/agents", headers={"accept": "text/html"})
    assert match.group(1) not in again.text  # shown once

    saved = await admin_client.post(
        "/settings/agents/office/settings",
        data={
            "trunks": "trunk-* carrier*",
            "events_map": '[{"event": "Hangup", "conditions": []}]',
            "guard_enabled": "true",
            "max_failures": "5",
            "window_seconds": "60",
            "ban_seconds": "120",
            "allow": "192.0.2.0/24",
        },
        headers={"accept": "text/html"},
    )
    assert saved.status_code == 303
    settings = (await admin_client.get("/api/v1/pbxes/office/agent-settings")).json()
    assert settings["trunks"] == ["trunk-*", "carrier*"]
    assert settings["events_map"][0]["event"] == "Hangup"
    assert settings["guard"] == {
        "enabled": True,
        "max_failures": 5,
        "window_seconds": 60,
        "ban_seconds": 120,
        "allow": ["192.0.2.0/24"],
    }

    broken_regex = '[{"event": "Hangup", "conditions": [{"header": "X", "op": "regex", "value": "("}]}]'
    bad = await admin_client.post(
        "/settings/agents/office/settings",
        data={"events_map": broken_regex},
        headers={"accept": "text/html"},
    )
    assert bad.status_code == 400 and "not valid" in bad.text

    # Lifting a ban needs the agent: offline, the page says so instead of pretending.
    lift = await admin_client.post(
        "/settings/agents/office/bans/203.0.113.9/lift", headers={"accept": "text/html"}
    )
    assert lift.status_code == 400 and "not connected" in lift.text
    api_lift = await admin_client.delete("/api/v1/bans/office/203.0.113.9")
    assert api_lift.status_code == 503
    assert api_lift.json()["error"]["code"] == "pbx_unavailable"
    # Not an address: a 400 that says so, whether the agent is connected or not.
    not_ip = await admin_client.delete("/api/v1/bans/office/not-an-ip")
    assert not_ip.status_code == 400
    assert not_ip.json()["error"] == {
        "code": "invalid_input",
        "message": "'not-an-ip' is not an IP address; a ban is lifted by its address",
    }
    form_not_ip = await admin_client.post(
        "/settings/agents/office/bans/not-an-ip/lift", headers={"accept": "text/html"}
    )
    assert form_not_ip.status_code == 400 and "is not an IP address" in form_not_ip.text
    unknown_pbx = await admin_client.delete("/api/v1/bans/nowhere/not-an-ip")
    assert unknown_pbx.status_code == 404


async def test_agent_api_needs_an_admin(hub: Hub, client: httpx.AsyncClient) -> None:
    await add_agent_pbx(hub)
    assert (await client.get("/api/v1/agents")).status_code == 401
    assert (await client.post("/api/v1/pbxes/office/agent-token")).status_code == 401
