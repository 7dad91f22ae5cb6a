"""The embedded Asterisk link end to end: PBX added through the API (or the CLI), the hub's own
link connects to the AMI simulator on 127.0.0.1, and scripted calls land in the call log API.

Expected call-log rows follow ``reference/asterisk_ami.md`` §2: the simulator's trunk is
``PJSIP/trunk`` (added with the trunk pattern ``trunk*``), so a call whose first channel is the
trunk is inbound and a call that dials the trunk is outbound; the outcome comes from the dial
statuses (ANSWER / CANCEL / BUSY), the blind transfer from ``BlindTransfer`` and the queue
abandon from ``QueueCallerAbandon``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.browser.conftest import LiveHub, start_hub, stop_hub
from tests.conftest import api_token

from callbridge.config import Settings
from callbridge.hub import Hub
from callbridge.pbx.asterisk.link import AsteriskLink
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.links import LinkSupervisor

SECRET = "ami-secret-for-hub-tests"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """As the shared fixture, but the hub runs PBX links, as `callbridge serve` does."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        default_region="US",
        login_delay_seconds=0,
        start_pbx_links=True,
    )


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(username="hub", secret=SECRET, auth_failure_delay=0.05) as server:
        yield server


@pytest.fixture
def fast_status(hub: Hub) -> Hub:
    """Record link state in the database every 0.1 s instead of every 5 s."""
    hub.links = LinkSupervisor(
        hub.link_factories(),
        hub.handle_event,
        report=hub._record_link_status,
        report_every=0.1,
    )
    return hub


async def eventually(check: Callable[[], Any], limit: float = 5.0) -> Any:
    """Poll a check (sync or async) until it returns something truthy; returns that value."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value or time.monotonic() > deadline:
            assert value, "condition not reached in time"
            return value
        await asyncio.sleep(0.05)


def asterisk_body(sim: AmiSimulator, **change: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "office",
        "kind": "asterisk",
        "host": "127.0.0.1",
        "port": sim.port,
        "username": "hub",
        "secret": SECRET,
        "trunks": ["trunk*"],
    }
    body.update(change)
    return body


async def add_pbx(client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, object]) -> None:
    made = await client.post("/api/v1/pbxes", json=body, headers=auth)
    assert made.status_code == 201, made.text


async def calls_by_id(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, dict[str, Any]]:
    answer = await client.get("/api/v1/calls", params={"limit": 100}, headers=auth)
    assert answer.status_code == 200, answer.text
    return {c["pbx_call_id"]: c for c in answer.json()["items"]}


def summary(call: dict[str, Any]) -> tuple[Any, ...]:
    return call["direction"], call["from_number"], call["disposition"], call["answered_by_extension"]


def link_of(hub: Hub, name: str = "office") -> AsteriskLink:
    assert hub.links is not None
    link = hub.links.links[name]
    assert isinstance(link, AsteriskLink)
    return link


async def test_added_pbx_connects_and_scripted_calls_land_in_the_call_log(
    fast_status: Hub, client: httpx.AsyncClient, sim: AmiSimulator
) -> None:
    hub = fast_status
    auth = {"authorization": f"Bearer {await api_token(hub, 'admin')}"}
    await add_pbx(client, auth, asterisk_body(sim))

    async def up() -> bool:
        body = (await client.get("/api/v1/pbxes/office", headers=auth)).json()
        return bool(body["link_up"])

    await eventually(up)
    assert sim.logins == 1
    detail = (await client.get("/api/v1/pbxes/office", headers=auth)).json()["link_detail"]
    assert detail == f"AMI 11.0.0 at 127.0.0.1:{sim.port}"

    # Run the calls at once: their events interleave on the one AMI session, as on a real PBX.
    ids = await asyncio.gather(
        sim.place_call("inbound_answered", caller="+14155550101", extension="1001", ring=1.0, talk=2.0),
        sim.place_call("inbound_missed", caller="+14155550102", extension="1002", ring=1.0),
        sim.place_call("inbound_busy", caller="+14155550103", extension="1003"),
        sim.place_call("outbound_answered", extension="1004", number="+442071838750", ring=1.0, talk=1.0),
        sim.place_call("blind_transfer", caller="+14155550105", extension="1005", target="1006", talk=1.0),
        sim.place_call("queue_abandoned", caller="+14155550106", members="1007,1008", ring=2.0),
        sim.place_call("redirected", caller="+14155550107", extension="1009", target="1010", talk=1.0),
    )
    answered, missed, busy, outbound, transfer, abandoned, redirected = ids

    async def all_ended() -> dict[str, dict[str, Any]] | None:
        calls = await calls_by_id(client, auth)
        done = all(i in calls and calls[i]["ended_at"] for i in ids)
        return calls if done else None

    calls = await eventually(all_ended)
    assert len(calls) == 7  # one row per conversation: the transfer and the queue legs are merged

    def row(call_id: str) -> tuple[Any, ...]:
        c = calls[call_id]
        return (
            c["direction"],
            c["from_number"],
            c["to_number"],
            c["disposition"],
            c["answered_by_extension"],
            c["transferred_to"],
        )

    assert row(answered) == ("inbound", "+14155550101", "5551000", "answered", "1001", None)
    assert row(missed) == ("inbound", "+14155550102", "5551000", "missed", None, None)
    assert row(busy) == ("inbound", "+14155550103", "5551000", "busy", None, None)
    assert row(outbound) == ("outbound", "1004", "+442071838750", "answered", None, None)
    assert calls[outbound]["placed_by_extension"] == "1004"
    assert row(transfer) == ("inbound", "+14155550105", "5551000", "answered", "1005", "1006")
    assert row(abandoned) == ("inbound", "+14155550106", "5551000", "abandoned", None, None)
    # An AMI Redirect (no transfer event from Asterisk) is a transfer like the others.
    assert row(redirected) == ("inbound", "+14155550107", "5551000", "answered", "1009", "1010")

    def near(call_id: str, ring: int, talk: int) -> bool:
        """Ring and talk seconds within 1 s (the simulator's pauses are real sleeps)."""
        got = calls[call_id]["ring_seconds"], calls[call_id]["talk_seconds"]
        return abs(got[0] - ring) <= 1 and abs(got[1] - talk) <= 1 and (got[1] == 0) is (talk == 0)

    assert near(answered, 1, 2), calls[answered]
    assert near(missed, 1, 0), calls[missed]
    assert near(busy, 0, 0), calls[busy]
    assert near(outbound, 1, 1), calls[outbound]
    assert near(transfer, 0, 2), calls[transfer]  # talk goes on through the transfer
    assert near(abandoned, 2, 0), calls[abandoned]
    assert near(redirected, 0, 2), calls[redirected]  # talk counts both parts
    assert calls[answered]["hangup_side"] == "callee"
    assert calls[missed]["hangup_side"] == "caller"
    assert all(c["pbx"] == "office" for c in calls.values())
    assert link_of(hub).status().extra["live_calls"] == "0"


async def test_wrong_credentials_show_a_clear_reason_and_do_not_retry(
    fast_status: Hub, client: httpx.AsyncClient, sim: AmiSimulator
) -> None:
    hub = fast_status
    auth = {"authorization": f"Bearer {await api_token(hub, 'admin')}"}
    await add_pbx(client, auth, asterisk_body(sim, secret="not-the-secret"))

    async def refused() -> dict[str, Any] | None:
        body = (await client.get("/api/v1/pbxes/office", headers=auth)).json()
        return body if "refused" in body["link_detail"] else None

    body = await eventually(refused)
    assert body["link_up"] is False
    assert "Authentication failed" in body["link_detail"]
    assert "manager.conf" in body["link_detail"]
    assert SECRET not in body["link_detail"] and "not-the-secret" not in body["link_detail"]

    async def recorded() -> bool:
        async with hub.db.unit() as repos:
            record = await repos.pbxes.get("office")
        return record.link_checked_at is not None and "Authentication failed" in record.link_detail

    await eventually(recorded)
    listing = await asyncio.to_thread(
        _cli, hub.settings.data_dir, "pbx", "list", database_url=hub.settings.effective_database_url
    )
    line = next(line for line in listing.splitlines() if "office" in line)
    assert " down " in line and "Authentication failed" in line
    await asyncio.sleep(1.5)  # many backoff periods of a reconnecting link
    logins = [m for m in sim.actions if m.get("Action") == "Login"]
    assert len(logins) == 1, "a refused login must not be retried in a loop"
    assert sim.logins == 0


async def test_dropped_ami_connection_mid_call_reconnects_and_logs_the_call_once(
    fast_status: Hub, client: httpx.AsyncClient, sim: AmiSimulator
) -> None:
    hub = fast_status
    auth = {"authorization": f"Bearer {await api_token(hub, 'admin')}"}
    await add_pbx(client, auth, asterisk_body(sim))
    await eventually(lambda: _connected(hub))
    link = link_of(hub)

    call = await sim.start_call("inbound", caller="+14155550199", extension="1001")

    async def answered() -> bool:
        calls = await calls_by_id(client, auth)
        return call.linkedid in calls and calls[call.linkedid]["answered_by_extension"] == "1001"

    await eventually(answered)
    before = link.client.connections
    sim.drop_connections()
    await eventually(lambda: _connected(hub, more_than=before))
    # The call is still up after the reconnect; the rebuilt call is the same call.
    await call.hangup("caller")

    async def ended() -> dict[str, dict[str, Any]] | None:
        calls = await calls_by_id(client, auth)
        done = call.linkedid in calls and calls[call.linkedid]["ended_at"]
        return calls if done else None

    calls = await eventually(ended)
    assert list(calls) == [call.linkedid]
    assert summary(calls[call.linkedid]) == ("inbound", "+14155550199", "answered", "1001")
    assert sim.logins == 2


async def _connected(hub: Hub, more_than: int = 0) -> bool:
    if hub.links is None or "office" not in hub.links.links:
        return False
    link = link_of(hub)
    return link.status().connected and link.client.connections > more_than


# -- a real `callbridge serve` process ----------------------------------------------------------


def _cli(data_dir: Path, *args: str, database_url: str = "") -> str:
    """Run the `callbridge` command as a user would, against the hub's data dir and database."""
    env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(data_dir), "NO_COLOR": "1", "COLUMNS": "200"}
    if database_url:
        env["CALLBRIDGE_DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, "-m", "callbridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_hub_started_after_the_pbx_was_added_connects_on_start(
    tmp_path: Path, sim: AmiSimulator
) -> None:
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    added = await asyncio.to_thread(
        _cli,
        data_dir,
        "pbx",
        "add",
        "asterisk",
        "office",
        "--host",
        "127.0.0.1",
        "--port",
        str(sim.port),
        "--username",
        "hub",
        "--secret",
        SECRET,
        "--trunk",
        "trunk*",
    )
    assert "office" in added and SECRET not in added
    before = await asyncio.to_thread(_cli, data_dir, "pbx", "list")
    assert "no hub has run this link yet" in before
    assert sim.sessions == 0

    live: LiveHub = await asyncio.to_thread(start_hub, data_dir)
    try:
        await eventually(lambda: sim.logins == 1, limit=10)

        async def listed_up() -> str | None:
            text = await asyncio.to_thread(_cli, data_dir, "pbx", "list")
            line = next(line for line in text.splitlines() if "office" in line)
            return line if " up " in line else None

        line = await eventually(listed_up, limit=30)  # the hub records link state every 5 s
        assert "asterisk" in line and "AMI 11.0.0" in line

        token = (await asyncio.to_thread(_cli, data_dir, "token", "create", "admin")).strip()
        call_id = await sim.place_call("inbound_answered", caller="+14155550142", extension="1001", talk=1.0)
        async with httpx.AsyncClient(base_url=live.url, timeout=5) as http:
            auth = {"authorization": f"Bearer {token}"}

            async def logged() -> dict[str, Any] | None:
                calls = await calls_by_id(http, auth)
                call = calls.get(call_id)
                return call if call and call["ended_at"] else None

            call = await eventually(logged, limit=10)
        assert summary(call) == ("inbound", "+14155550142", "answered", "1001")
    finally:
        await asyncio.to_thread(stop_hub, live)
    log = (data_dir / "hub.log").read_text()
    assert SECRET not in log


async def test_without_trunk_patterns_the_documented_default_applies(
    hub: Hub, client: httpx.AsyncClient, sim: AmiSimulator
) -> None:
    """docs/asterisk.md: trunk patterns default to ``trunk*``; a PBX added without any must
    still tell an inbound call (from the simulator's ``PJSIP/trunk``) from an internal one."""
    auth = {"authorization": f"Bearer {await api_token(hub, 'admin')}"}
    await add_pbx(client, auth, {k: v for k, v in asterisk_body(sim).items() if k != "trunks"})
    await eventually(lambda: _connected(hub))
    call_id = await sim.place_call("inbound_answered", caller="+14155550177", extension="1001")

    async def ended() -> dict[str, Any] | None:
        call = (await calls_by_id(client, auth)).get(call_id)
        return call if call and call["ended_at"] else None

    assert summary(await eventually(ended)) == ("inbound", "+14155550177", "answered", "1001")


async def test_dialplan_direction_variable_is_the_one_the_hub_listens_for(
    hub: Hub, client: httpx.AsyncClient
) -> None:
    """The dialplan in docs/asterisk.md sets __CALLBRIDGE_DIRECTION; a PBX added with default
    settings must read it. The trunk pattern here matches nothing, so only the variable can
    tell these calls' directions."""
    async with AmiSimulator(
        username="hub", secret=SECRET, trunk="carrier", direction_variable="CALLBRIDGE_DIRECTION"
    ) as sim:
        auth = {"authorization": f"Bearer {await api_token(hub, 'admin')}"}
        await add_pbx(client, auth, asterisk_body(sim, trunks=["nothing-matches-*"]))
        await eventually(lambda: _connected(hub))
        inbound = await sim.place_call("inbound_answered", caller="+14155550161", extension="1001")
        outbound = await sim.place_call("outbound_answered", extension="1002", number="+442071838750")
        internal = await sim.place_call("internal_answered", extension="1003", number="1004")

        async def ended() -> dict[str, dict[str, Any]] | None:
            calls = await calls_by_id(client, auth)
            done = all(i in calls and calls[i]["ended_at"] for i in (inbound, outbound, internal))
            return calls if done else None

        calls = await eventually(ended)
        assert calls[inbound]["direction"] == "inbound"
        assert calls[outbound]["direction"] == "outbound"
        assert calls[internal]["direction"] == "internal"
