"""Enrollment over a real hub: `callbridge pbx enroll` prints a single-use code, `callbridge agent
enroll` exchanges it for the agent's token and writes the config; versions on the agents list."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.agent.conftest import Served, add_agent_pbx
from websockets.asyncio.client import connect

import callbridge
from callbridge.agent.config import build
from callbridge.agent.enroll import systemd_unit
from callbridge.config import Settings
from callbridge.domain.errors import AuthenticationFailed
from callbridge.services.agents import authenticate, hash_agent_token, issue_enrollment


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CALLBRIDGE_DATA_DIR": str(settings.data_dir),
        "CALLBRIDGE_DATABASE_URL": settings.database_url or "",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        **extra,
    }


async def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess (the hub under test serves from this event loop)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "callbridge", *args],
        capture_output=True,
        text=True,
        env=cli_env(settings, **env),
        timeout=60,
        check=False,
    )


async def enroll_code(settings: Settings, name: str = "office", *extra: str) -> str:
    done = await cli(settings, "pbx", "enroll", name, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"^(cbenroll_\S+)$", done.stdout, re.MULTILINE)
    assert match, done.stdout
    return match.group(1)


async def test_enroll_exchanges_a_code_once_for_the_agents_token(
    served: Served, settings: Settings, tmp_path: Path
) -> None:
    old_token = await add_agent_pbx(served.hub)
    shown = await cli(settings, "pbx", "enroll", "office", "--expires-hours", "2")
    assert shown.returncode == 0, shown.stderr
    assert "works once, until" in shown.stdout and "callbridge agent enroll --hub" in shown.stdout
    code = re.findall(r"^cbenroll_\S+$", shown.stdout, re.MULTILINE)[0]
    # Stored hashed: the code itself is nowhere in the hub's database.
    async with served.hub.db.unit() as repos:
        stored = await repos.agents.enrollment(hash_agent_token(code))
        assert stored is not None and stored.pbx == "office" and stored.used_at is None
        assert timedelta(hours=1, minutes=59) < stored.expires_at - datetime.now(UTC) <= timedelta(hours=2)

    config = tmp_path / "etc" / "agent.toml"
    done = await cli(
        settings,
        *("agent", "enroll", "--hub", served.url, "--code", code, "--config", str(config)),
        *("--ami-username", "callbridge", "--outbox", str(tmp_path / "var" / "outbox.sqlite3")),
        CALLBRIDGE_AGENT_AMI_SECRET='se"cret\\',
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Enrolled: this host's agent serves PBX office" in done.stdout
    assert "agent systemd-unit --config " + str(config) in done.stdout
    assert "[ami]" not in done.stdout  # AMI given: no step asks for it
    # The token is in the file only: not printed, mode 600, owned by whoever ran it.
    mode = config.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.getuid()
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    data = tomllib.loads(config.read_text())
    token = data["token"]
    assert token not in done.stdout + done.stderr
    assert data["hub"] == served.url and data["ami"]["secret"] == 'se"cret\\'
    agent_config = build(config)  # a config the agent starts with
    assert (
        agent_config.ami_username == "callbridge"
        and agent_config.outbox == tmp_path / "var" / "outbox.sqlite3"
    )
    async with served.hub.db.unit() as repos:
        assert (await authenticate(repos.agents, token)).pbx == "office"
        with pytest.raises(AuthenticationFailed):
            await authenticate(repos.agents, old_token)  # enrolling again replaces the token
        assert (await repos.agents.enrollment(hash_agent_token(code))).used_at is not None  # type: ignore[union-attr]

    # The same code again: refused with words, and nothing is written.
    again = tmp_path / "other.toml"
    reused = await cli(
        settings, "agent", "enroll", "--hub", served.url, "--code", code, "--config", str(again)
    )
    assert reused.returncode == 1
    assert "enrollment code refused: it was already used" in reused.stderr
    assert "callbridge pbx enroll office" in reused.stderr and "Traceback" not in reused.stderr
    assert not again.exists()
    # An existing config is not overwritten unless asked.
    exists = await cli(
        settings, "agent", "enroll", "--hub", served.url, "--code", code, "--config", str(config)
    )
    assert exists.returncode == 2 and "exists already" in exists.stderr
    assert tomllib.loads(config.read_text())["token"] == token


async def test_unknown_forged_and_expired_codes_are_refused_with_words(
    served: Served, tmp_path: Path
) -> None:
    await add_agent_pbx(served.hub)
    async with served.hub.db.unit() as repos:
        expired, _ = await issue_enrollment(
            repos.agents, "office", 1, now=datetime.now(UTC) - timedelta(hours=2)
        )
        good, _ = await issue_enrollment(repos.agents, "office", 1)
    messages = []
    # Four refusals in all: one under the throttle's limit (5), so the good code still goes through.
    for forged in ("cbenroll_" + "x" * 20, good[:-3] + "zzz", "not-a-code"):
        answer = await served.api.post(
            "/agent/v1/enroll", json={"code": forged}, headers={"authorization": ""}
        )
        assert answer.status_code == 401, answer.text
        messages.append(answer.json()["error"]["message"])
    # Unknown and forged look the same: nothing tells a guesser how close it came.
    assert len(set(messages)) == 1 and "unknown code" in messages[0]
    answer = await served.api.post("/agent/v1/enroll", json={"code": expired})
    assert answer.status_code == 401 and "expired at" in answer.json()["error"]["message"]
    answer = await served.api.post("/agent/v1/enroll", json={"code": "x" * 201})
    assert answer.status_code in (400, 422) and "error" in answer.json()
    # Still good after the others failed (under the throttle's limit).
    answer = await served.api.post("/agent/v1/enroll", json={"code": good})
    assert answer.status_code == 200 and answer.json()["pbx"] == "office"
    assert answer.json()["token"].startswith("cbagent_")


async def test_wrong_codes_are_throttled_like_sign_ins(served: Served) -> None:
    await add_agent_pbx(served.hub)
    async with served.hub.db.unit() as repos:
        good, _ = await issue_enrollment(repos.agents, "office")
    limit = served.hub.login_policy.max_failures
    for _ in range(limit):
        answer = await served.api.post("/agent/v1/enroll", json={"code": "cbenroll_guess"})
        assert answer.status_code == 401
    # Locked: even the right code waits, and the code is not spent by the refused attempt.
    answer = await served.api.post("/agent/v1/enroll", json={"code": good})
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "rate_limited"
    assert int(answer.headers["retry-after"]) >= 1
    async with served.hub.db.unit() as repos:
        assert (await repos.agents.enrollment(hash_agent_token(good))).used_at is None  # type: ignore[union-attr]


async def test_pbx_enroll_needs_an_agent_pbx_and_sane_hours(served: Served, settings: Settings) -> None:
    await add_agent_pbx(served.hub)
    done = await cli(
        settings,
        "pbx",
        "add",
        "asterisk",
        "direct",
        "--host",
        "127.0.0.1",
        "--username",
        "u",
        "--secret",
        "s",
    )
    assert done.returncode == 0, done.stderr
    refused = await cli(settings, "pbx", "enroll", "direct")
    assert refused.returncode == 1 and "not served by an agent" in refused.stderr
    missing = await cli(settings, "pbx", "enroll", "nowhere")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    for hours in ("0", "721"):
        bad = await cli(settings, "pbx", "enroll", "office", "--expires-hours", hours)
        assert bad.returncode == 2 and "expires-hours" in bad.stderr
    # Several codes may be out at once (one per machine being set up); each works once.
    first, second = await enroll_code(settings), await enroll_code(settings)
    for code in (first, second):
        answer = await served.api.post("/agent/v1/enroll", json={"code": code})
        assert answer.status_code == 200


async def test_agent_enroll_says_when_the_hub_cannot_be_reached(tmp_path: Path, settings: Settings) -> None:
    done = await cli(
        settings, "agent", "enroll", "--hub", "http://127.0.0.1:9", "--code", "cbenroll_x",
        "--config", str(tmp_path / "a.toml"),
    )  # fmt: skip
    assert done.returncode == 1 and "cannot reach the hub at http://127.0.0.1:9" in done.stderr
    bad = await cli(settings, "agent", "enroll", "--hub", "hub.example.com", "--code", "c", "--config", "x")
    assert bad.returncode == 2 and "--hub must look like" in bad.stderr
    assert not (tmp_path / "a.toml").exists()


async def test_agents_list_shows_the_version_the_agent_reported_and_whether_it_is_older(
    served: Served, settings: Settings
) -> None:
    token = await add_agent_pbx(served.hub)
    listed = (await served.api.get("/api/v1/agents")).json()["items"][0]
    assert listed["version"] == "" and listed["outdated"] is None  # never connected
    ws_url = served.url.replace("http://", "ws://") + "/agent/v1/link"
    for version, outdated in (("0.0.9", True), (callbridge.__version__, False), ("0.10.0", False)):
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(json.dumps({"type": "hello", "version": version, "epoch": "e1"}))
            assert json.loads(await ws.recv())["type"] == "welcome"
            listed = (await served.api.get("/api/v1/agents")).json()["items"][0]
            assert (listed["version"], listed["outdated"]) == (version, outdated)
            page = (await served.api.get("/settings/agents", headers={"accept": "text/html"})).text
            row = page[page.index('id="agent-office"') :]
            row = row[: row.index("</tr>")]
            assert f"v{version}" in row
            assert ("older than the hub" in row) is outdated
            if outdated:
                listing = await cli(settings, "pbx", "list")
                assert f"agent {version} (older than the hub)" in listing.stdout, (
                    listing.stdout + listing.stderr
                )


def test_systemd_unit_runs_this_venvs_agent_with_the_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'hub = "http://h"\ntoken = "t"\noutbox = "{tmp_path / "state" / "o.sqlite3"}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "callbridge", "agent", "systemd-unit", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    unit = done.stdout
    exe = Path(sys.executable).parent / "callbridge"
    assert f"ExecStart={exe} agent run --config {config}\n" in unit
    assert f"ReadWritePaths={tmp_path / 'state'}\n" in unit  # the outbox's directory, from the config
    assert "ReadOnlyPaths=-/var/spool/asterisk/monitor\n" in unit
    assert "User=callbridge-agent\n" in unit and "SupplementaryGroups=asterisk\n" in unit
    assert "AmbientCapabilities=CAP_NET_ADMIN\n" in unit and "AF_NETLINK" in unit
    assert "NoNewPrivileges=yes\n" in unit and "ProtectSystem=strict\n" in unit
    assert unit == systemd_unit(exe, config, state_dir=tmp_path / "state")
    bare = subprocess.run(
        [sys.executable, "-m", "callbridge", "agent", "systemd-unit", "--no-firewall", "--group", ""],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "CAP_NET_ADMIN" not in bare and "SupplementaryGroups" not in bare
    assert "ReadWritePaths=/var/lib/callbridge-agent\n" in bare  # before enrollment: the defaults


async def test_a_code_is_spent_once_even_when_two_exchanges_race(served: Served) -> None:
    await add_agent_pbx(served.hub)
    async with served.hub.db.unit() as repos:
        code, _ = await issue_enrollment(repos.agents, "office")
    # Both read the code unused; only one conditional update spends it.
    async with served.hub.db.unit() as first_reader:
        assert (await first_reader.agents.enrollment(hash_agent_token(code))).used_at is None  # type: ignore[union-attr]
    answers = await asyncio.gather(
        *(served.api.post("/agent/v1/enroll", json={"code": code}) for _ in range(2))
    )
    assert sorted(a.status_code for a in answers) == [200, 401]
    async with served.hub.db.unit() as repos:
        assert await repos.agents.use_enrollment(hash_agent_token(code), datetime.now(UTC)) is False
        winner = next(a for a in answers if a.status_code == 200).json()["token"]
        assert (await authenticate(repos.agents, winner)).pbx == "office"
