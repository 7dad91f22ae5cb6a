"""Queues end to end: the hub's own AMI link to the simulator, app_queue scenarios played on
its virtual clock, and what the API then says: each call's queue, the queue's figures (equal to
a recomputation from the simulator's queue_log), who sees which agent rows, the settings, and a
supervisor's pause and ChanSpy as the simulator receives them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import add_user, api_token
from tests.pbx.asterisk.test_ami_queues import _visits_by_call, play_scenarios
from tests.pbx.asterisk.test_asterisk_hub import eventually

from callbridge.config import Settings
from callbridge.domain.events import QueueMemberChanged
from callbridge.domain.queues import QueueSettings, queue_figures
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.pbx.asterisk.queue_log import parse_queue_log
from callbridge.pbx.asterisk.simulator import AmiSimulator

SECRET = "ami-secret-for-queue-tests"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        default_region="US",
        login_delay_seconds=0,
        start_pbx_links=True,
    )


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(
        username="hub", secret=SECRET, auth_failure_delay=0.05, timestamps=True, virtual_time=True
    ) as server:
        yield server


async def connected(hub: Hub, client: httpx.AsyncClient, sim: AmiSimulator) -> dict[str, str]:
    auth = {"authorization": f"Bearer {await api_token(hub, 'admin')}"}
    body = {
        "name": "office",
        "kind": "asterisk",
        "host": "127.0.0.1",
        "port": sim.port,
        "username": "hub",
        "secret": SECRET,
        "trunks": ["trunk*"],
    }
    made = await client.post("/api/v1/pbxes", json=body, headers=auth)
    assert made.status_code == 201, made.text
    await eventually(lambda: any(m.get("Action") == "QueueSummary" for m in sim.actions))
    return auth


async def calls_by_pbx_id(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, dict[str, Any]]:
    answer = await client.get("/api/v1/calls", params={"limit": 100}, headers=auth)
    assert answer.status_code == 200, answer.text
    return {c["pbx_call_id"]: c for c in answer.json()["items"]}


async def test_queue_calls_land_with_their_queue_and_the_figures_match_the_queue_log(
    hub: Hub, client: httpx.AsyncClient, sim: AmiSimulator
) -> None:
    auth = await connected(hub, client, sim)
    async with hub.db.unit() as repos:
        agent = await add_user(hub, "agent1002", Role.AGENT)
        await repos.extensions.map("office", "1002", agent.id)
        await repos.commit()
    await add_user(hub, "nobody", Role.AGENT)  # an agent who owns nothing
    start = datetime.fromtimestamp(sim.now(), UTC)
    ids = await play_scenarios(sim)
    end = datetime.fromtimestamp(sim.now(), UTC) + timedelta(seconds=1)

    async def landed() -> dict[str, dict[str, Any]] | None:
        calls = await calls_by_pbx_id(client, auth)
        done = all(i in calls and calls[i]["ended_at"] for i in ids.values())
        return calls if done else None

    calls = await eventually(landed)
    queues = {k: calls[i]["queue"] for k, i in ids.items()}
    assert {k: (q["name"], q["wait_seconds"], q["outcome"]) for k, q in queues.items()} == {
        "answered": ("sales", 12, "answered"),
        "abandoned": ("sales", 40, "abandoned"),
        "short": ("sales", 2, "abandoned"),
        "timeout": ("sales", 60, "timeout"),
        "full": ("sales", 0, "full"),
        "late": ("sales", 25, "answered"),
    }
    detail = (await client.get(f"/api/v1/calls/{calls[ids['answered']]['id']}", headers=auth)).json()
    assert detail["queue"]["answered_by_extension"] == "1001"
    assert detail["queue"]["agents_rung"] == ["1002", "1001"]
    assert detail["queue"]["rings_unanswered"] == ["1002"]
    assert detail["queue"]["talk_seconds"] == 30
    assert detail["disposition"] == "answered" and detail["answered_by_extension"] == "1001"
    page = await client.get(f"/calls/{calls[ids['answered']]['id']}", headers=auth)
    assert page.status_code == 200, page.text
    assert "Queue sales" in page.text and "answered after 12 s by ext. 1001, talked 30 s" in page.text
    assert "not answered: 1002" in page.text
    assert "data-spy=" not in page.text  # the call is over: nothing to join
    gave_up = await client.get(f"/calls/{calls[ids['abandoned']]['id']}", headers=auth)
    assert "the caller gave up after 40 s" in gave_up.text

    listed = (await client.get("/api/v1/queues", headers=auth)).json()["items"]
    assert listed == [{"name": "sales", "sl_seconds": 20, "short_abandon_seconds": 5, "wrapup_seconds": 0}]

    period = {"from": start.isoformat(), "to": end.isoformat()}
    stats = (await client.get("/api/v1/queues/sales/stats", params=period, headers=auth)).json()
    assert {
        k: stats[k] for k in ("offered", "answered", "abandoned", "short_abandoned", "timed_out", "full")
    } == {
        "offered": 4,
        "answered": 2,
        "abandoned": 1,
        "short_abandoned": 1,
        "timed_out": 1,
        "full": 1,
    }
    assert (stats["answer_rate"], stats["service_level"]) == (0.5, 0.25)
    assert datetime.fromisoformat(stats["from"]) == start
    agents = {a["extension"]: a for a in stats["agents"]}
    assert agents["1002"]["user"] == "agent1002"
    assert agents["1002"]["paused_seconds_by_reason"] == {"lunch": 642}
    assert (agents["1001"]["answered"], agents["1001"]["talk_seconds"]) == (1, 30)
    # The service level with another T, asked for once.
    wider = (
        await client.get("/api/v1/queues/sales/stats", params=period | {"sl_seconds": 30}, headers=auth)
    ).json()
    assert wider["service_level"] == 0.5 and wider["sl_seconds"] == 30

    # The cross-check: the queue_log Asterisk would have written gives the same figures.
    log = parse_queue_log(sim.queue_log, "office")
    assert log.errors == []
    members = [e for e in log.events if isinstance(e, QueueMemberChanged)]
    f = queue_figures("sales", _visits_by_call(log.events), QueueSettings(), members, start, end)
    for key, value in f.as_dict().items():
        if key != "queue":
            assert stats[key] == value, key
    assert {
        ext: (a.answered, a.ring_no_answer, a.talk_seconds, a.logged_in_seconds, a.paused_seconds_by_reason)
        for ext, a in f.agents.items()
    } == {
        a["extension"]: (
            a["answered"],
            a["ring_no_answer"],
            a["talk_seconds"],
            a["logged_in_seconds"],
            a["paused_seconds_by_reason"],
        )
        for a in stats["agents"]
    }

    # Privacy: an agent sees the team's totals and only their own agent row; one who owns
    # nothing sees no agent row; neither may change settings.
    mine = {"authorization": f"Bearer {await api_token(hub, 'agent1002')}"}
    nobody = {"authorization": f"Bearer {await api_token(hub, 'nobody')}"}
    as_agent = (await client.get("/api/v1/queues/sales/stats", params=period, headers=mine)).json()
    assert [a["extension"] for a in as_agent["agents"]] == ["1002"]
    assert as_agent["offered"] == 4
    as_nobody = (await client.get("/api/v1/queues/sales/stats", params=period, headers=nobody)).json()
    assert as_nobody["agents"] == []
    refused = await client.put(
        "/api/v1/queues/sales/settings", json={"sl_seconds": 30, "short_abandon_seconds": 3}, headers=nobody
    )
    assert refused.status_code == 403
    hidden = await client.get(f"/api/v1/calls/{calls[ids['answered']]['id']}", headers=nobody)
    assert hidden.status_code == 404

    # Settings: a manager sets T and the short-abandon threshold; the figures follow.
    put = await client.put(
        "/api/v1/queues/sales/settings", json={"sl_seconds": 30, "short_abandon_seconds": 1}, headers=auth
    )
    assert put.status_code == 200, put.text
    again = (await client.get("/api/v1/queues/sales/stats", params=period, headers=auth)).json()
    assert (again["short_abandoned"], again["abandoned"], again["offered"], again["service_level"]) == (
        0,
        2,
        5,
        0.4,
    )


async def test_bad_queue_requests_get_400_or_404_with_words(
    hub: Hub, client: httpx.AsyncClient, sim: AmiSimulator
) -> None:
    auth = await connected(hub, client, sim)
    sim.add_queue_member("sales", "1001")
    await sim.queue_call("sales", "abandoned", wait=3)
    await eventually(lambda: _known(client, auth))
    cases = [
        ("/api/v1/queues/sales/stats?from=2026-12-06&to=2026-12-05", 400, "after"),
        ("/api/v1/queues/sales/stats?from=yesterday", 400, "not a date"),
        ("/api/v1/queues/sales/stats?from=2020-01-01&to=2026-01-01", 400, "at most"),
        ("/api/v1/queues/sales/stats?sl_seconds=-1", 422, ""),
        ("/api/v1/queues/nosuch/stats", 404, "nosuch"),
    ]
    for path, status, words in cases:
        answer = await client.get(path, headers=auth)
        assert answer.status_code == status, (path, answer.text)
        assert "error" in answer.json()
        assert words in answer.json()["error"]["message"], answer.text
    bad = await client.put(
        "/api/v1/queues/sales/settings", json={"sl_seconds": 99999, "short_abandon_seconds": 1}, headers=auth
    )
    assert bad.status_code == 422


async def _known(client: httpx.AsyncClient, auth: dict[str, str]) -> bool:
    items = (await client.get("/api/v1/queues", headers=auth)).json()["items"]
    return any(q["name"] == "sales" for q in items)


async def test_supervisor_pauses_a_member_and_listens_whispers_barges(
    hub: Hub, client: httpx.AsyncClient, sim: AmiSimulator
) -> None:
    sim.add_queue_member("sales", "1001")
    auth = await connected(hub, client, sim)
    paused = await client.post(
        "/api/v1/queues/sales/members/1001/pause", json={"paused": True, "reason": "coaching"}, headers=auth
    )
    assert paused.status_code == 204, paused.text
    sent = [m for m in sim.actions if m.get("Action") == "QueuePause"]
    assert [(m.get("Interface"), m.get("Queue"), m.get("Paused"), m.get("Reason")) for m in sent] == [
        ("PJSIP/1001", "sales", "true", "coaching")
    ]
    assert sim.queues["sales"]["PJSIP/1001"].paused
    assert sim.queues["sales"]["PJSIP/1001"].reason == "coaching"
    missing = await client.post(
        "/api/v1/queues/sales/members/1999/pause", json={"paused": True}, headers=auth
    )
    assert missing.status_code == 422
    assert "not a member" in missing.json()["error"]["message"]
    assert [m.get("Action") for m in sim.actions].count("QueuePause") == 1  # nothing sent for it
    unpaused = await client.post(
        "/api/v1/queues/sales/members/1001/pause", json={"paused": False}, headers=auth
    )
    assert unpaused.status_code == 204
    assert not sim.queues["sales"]["PJSIP/1001"].paused

    # A live call: listen, whisper, barge from the supervisor's phone 1005.
    call = await sim.start_call("inbound", caller="+14155550111", extension="1001")
    row = await eventually(lambda: _call_row(client, auth, call.linkedid))
    for mode in ("listen", "whisper", "barge"):
        done = await client.post(
            f"/api/v1/calls/{row['id']}/spy", json={"mode": mode, "extension": "1005"}, headers=auth
        )
        assert done.status_code == 204, done.text
    agent_channel = call.channels[1].name
    assert [(s["supervisor"], s["channel"], s["options"]) for s in sim.spies] == [
        ("PJSIP/1005", agent_channel, "q"),
        ("PJSIP/1005", agent_channel, "qw"),
        ("PJSIP/1005", agent_channel, "qB"),
    ]
    page = await client.get(f"/calls/{row['id']}", headers=auth)
    assert 'data-spy="whisper"' in page.text and "/static/supervise.js" in page.text
    wrong = await client.post(
        f"/api/v1/calls/{row['id']}/spy", json={"mode": "shout", "extension": "1005"}, headers=auth
    )
    assert wrong.status_code == 422
    no_phone = await client.post(f"/api/v1/calls/{row['id']}/spy", json={"mode": "listen"}, headers=auth)
    assert no_phone.status_code == 400 and "extension" in no_phone.json()["error"]["message"]
    # Agents may do neither.
    await add_user(hub, "plain", Role.AGENT)
    plain = {"authorization": f"Bearer {await api_token(hub, 'plain')}"}
    assert (
        await client.post("/api/v1/queues/sales/members/1001/pause", json={"paused": True}, headers=plain)
    ).status_code == 403
    assert (
        await client.post(f"/api/v1/calls/{row['id']}/spy", json={"mode": "listen"}, headers=plain)
    ).status_code == 403
    await call.hangup("caller")
    await asyncio.sleep(0)


async def _call_row(
    client: httpx.AsyncClient, auth: dict[str, str], pbx_call_id: str
) -> dict[str, Any] | None:
    calls = await calls_by_pbx_id(client, auth)
    return calls.get(pbx_call_id)
