"""Voicemail through the agent: the AMI simulator leaves a message as app_voicemail does (spool
files + MessageWaiting) → the agent takes it from the mailbox's INBOX → announces it and
uploads its audio → the hub's voicemail plays the very same bytes, linked to the call."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.agent.conftest import Served, add_agent_pbx
from tests.agent.test_agent_link import SECRET, eventually
from tests.agent.test_agent_recordings import config, running, write_wav

from callbridge.agent.voicemail import mailbox_dir, scan_mailbox
from callbridge.domain.voicemails import Voicemail
from callbridge.pbx.asterisk.simulator import AmiSimulator


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(secret=SECRET, auth_failure_delay=0.05) as s:
        s.monitor_dir = str(tmp_path / "monitor")
        s.voicemail_dir = str(tmp_path / "voicemail")
        (tmp_path / "monitor").mkdir()
        (tmp_path / "voicemail").mkdir()
        yield s


async def voicemails(served: Served) -> list[Voicemail]:
    async with served.hub.db.unit() as repos:
        found, _ = await repos.voicemails.search(mailboxes=None)
    return found


async def until_ready(served: Served, count: int = 1) -> list[Voicemail]:
    async def check() -> bool:
        found = await voicemails(served)
        return len(found) == count and all(v.audio_status.value == "ready" for v in found)

    await eventually(check, limit=20, what=f"{count} voicemail(s) with audio")
    return await voicemails(served)


async def test_a_voicemail_left_at_asterisk_reaches_the_hub_with_its_audio(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    token = await add_agent_pbx(served.hub)
    audio = write_wav(tmp_path / "speech.wav", 3.0, seed=7)
    cfg = config(served.url, token, sim, tmp_path, voicemail_dir=Path(sim.voicemail_dir))
    async with running(cfg) as agent:
        linkedid, txt = await sim.leave_voicemail(audio, mailbox="7001", caller="+14155550100", duration=3)
        [vm] = await until_ready(served)
        assert vm.mailbox == "7001@default" and vm.pbx == "office"
        assert vm.caller_number == "+14155550100" and vm.caller_name == "Carrier"
        assert vm.duration_seconds == 3 and vm.heard is False
        assert vm.sha256 == hashlib.sha256(audio).hexdigest() and vm.size_bytes == len(audio)
        played = await served.api.get(f"/api/v1/voicemails/{vm.id}/audio")
        assert played.status_code == 200
        assert hashlib.sha256(played.content).hexdigest() == hashlib.sha256(audio).hexdigest()
        part = await served.api.get(f"/api/v1/voicemails/{vm.id}/audio", headers={"Range": "bytes=0-43"})
        assert part.status_code == 206 and part.content == audio[:44]

        # The call the message was left on is linked (its Linkedid came with MessageWaiting).
        async def linked() -> bool:
            answer = await served.api.get(f"/api/v1/voicemails/{vm.id}")
            call_id = answer.json()["call_id"]
            if call_id is None:
                return False
            call = await served.api.get(f"/api/v1/calls/{call_id}")
            return bool(call.status_code == 200 and call.json()["pbx_call_id"] == linkedid)

        await eventually(linked, what="the voicemail linked to its call")
        async with served.hub.db.unit() as repos:
            assert (await repos.voicemails.get(vm.id)) is not None
        assert agent.voicemail.sent == 1

        # A second message in the same mailbox: only it is sent (the first is remembered).
        second = write_wav(tmp_path / "second.wav", 1.0, seed=9)
        await sim.leave_voicemail(second, mailbox="7001")
        found = await until_ready(served, 2)
        assert {v.sha256 for v in found} == {
            hashlib.sha256(audio).hexdigest(),
            hashlib.sha256(second).hexdigest(),
        }
        assert agent.voicemail.sent == 2
    # The outbox remembers both as sent: an agent started again takes neither again.
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    assert db.execute("SELECT count(*), sum(done) FROM voicemails").fetchone() == (2, 2)
    db.close()
    assert txt.exists()  # the PBX's own copy is left alone


async def test_a_message_without_its_audio_stays_pending_with_the_reason_then_arrives(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    token = await add_agent_pbx(served.hub)
    audio = write_wav(tmp_path / "speech.wav", 1.0)
    cfg = config(served.url, token, sim, tmp_path, voicemail_dir=Path(sim.voicemail_dir))
    async with running(cfg):
        _, txt = await sim.leave_voicemail(audio, mailbox="7002", context="sales")
        wav = txt.with_suffix(".wav")
        held = wav.read_bytes()
        wav.unlink()  # not there yet (a slow disk, a copy in progress)

        async def pending() -> bool:
            found = await voicemails(served)
            return len(found) == 1 and "waiting for the agent" in found[0].audio_reason

        await eventually(pending, what="a pending voicemail with its reason")
        wav.write_bytes(held)
        [vm] = await until_ready(served)
        assert vm.mailbox == "7002@sales" and vm.sha256 == hashlib.sha256(audio).hexdigest()


def test_mailbox_names_never_lead_outside_the_voicemail_directory(tmp_path: Path) -> None:
    root = tmp_path / "voicemail"
    assert mailbox_dir(root, "7001@default") == root / "default" / "7001" / "INBOX"
    assert mailbox_dir(root, "7001") == root / "default" / "7001" / "INBOX"
    for bad in ("../etc@default", "7001@..", "7001@a/b", "", "@default", ".hidden@default"):
        assert mailbox_dir(root, bad) is None, bad
    # A symbolic link from a mailbox to elsewhere is not followed.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "msg0000.txt").write_text("[message]\norigtime=1700000000\ncallerid=<+1415>\n")
    (root / "default" / "7001").mkdir(parents=True)
    (root / "default" / "7001" / "INBOX").symlink_to(outside)
    assert scan_mailbox(root, "7001@default") == []


def test_a_message_file_is_read_as_app_voicemail_writes_it(tmp_path: Path) -> None:
    inbox = tmp_path / "default" / "7001" / "INBOX"
    inbox.mkdir(parents=True)
    (inbox / "msg0000.txt").write_text(
        ";\n; Message Information file\n;\n[message]\norigmailbox=7001\ncontext=macro-vm\n"
        'callerid="Ada Lovelace" <+14155550100>\norigdate=Sun Dec  6 10:12:40 AM UTC 2026\n'
        "origtime=1796552760\ncategory=\nmsg_id=1796552760-00000003\nflag=\nduration=12\n"
    )
    (inbox / "msg0001.txt").write_text("[message]\ncallerid=Unknown\n")  # no origtime: skipped
    [(reference, body)] = scan_mailbox(tmp_path, "7001@default")
    expected: dict[str, Any] = {
        "mailbox": "7001@default",
        "reference": "default/7001/1796552760-00000003",
        "caller_number": "+14155550100",
        "caller_name": "Ada Lovelace",
        "received_at": "2026-12-06T10:26:00+00:00",
        "duration_seconds": 12,
        "call_id": "",
        "audio": str(inbox / "msg0000.wav"),
    }
    assert reference == expected["reference"] and body == expected


async def test_a_message_left_while_the_agent_was_stopped_is_taken_when_it_starts(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    """No MessageWaiting reaches a stopped agent: at start it looks through every mailbox for
    messages left since it first ran. Messages that were there before it first ran are not
    callbridge's to report, and stay unannounced."""
    token = await add_agent_pbx(served.hub)
    cfg = config(served.url, token, sim, tmp_path, voicemail_dir=Path(sim.voicemail_dir))
    _, old_txt = await sim.leave_voicemail(write_wav(tmp_path / "old.wav", 1.0, seed=3), mailbox="7003")
    # Left well before the agent first runs (app_voicemail's origtime is the message's time).
    text = old_txt.read_text()
    origtime = int(text.split("origtime=")[1].split()[0])
    old_txt.write_text(text.replace(f"origtime={origtime}", f"origtime={origtime - 3600}"))
    async with running(cfg) as agent:
        await asyncio.sleep(0.3)
        assert agent.voicemail.sent == 0  # the first start only notes the time
    audio = write_wav(tmp_path / "while.wav", 2.0, seed=4)
    await sim.leave_voicemail(audio, mailbox="7004", context="sales")  # its event reaches nobody
    async with running(cfg) as agent:
        [vm] = await until_ready(served)
        assert vm.mailbox == "7004@sales" and vm.sha256 == hashlib.sha256(audio).hexdigest()
        await asyncio.sleep(0.3)
        assert agent.voicemail.sent == 1  # not the one from before the agent
    assert len(await voicemails(served)) == 1
