"""Deleting a voicemail in callbridge deletes the message at the PBX when asked
(``DELETE /api/v1/voicemails/{id}?at_pbx=true``): the request waits in the database while the
agent is offline, and the agent, once connected, deletes that message's files (found by its
``msg_id``, in whichever folder of the mailbox it now is) inside its voicemail directory only,
answering deleted / not_found / refused. Without ``at_pbx`` the PBX's copy stays."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from tests.agent.conftest import Served, add_agent_pbx
from tests.agent.test_agent_link import SECRET, eventually
from tests.agent.test_agent_recordings import config, running, write_wav
from tests.conftest import add_user, api_token

from callbridge.agent.voicemail import delete_message
from callbridge.domain.pbx import PbxKind
from callbridge.domain.users import Role
from callbridge.hub import Hub
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.pbxes import AsteriskSettings, YeastarSettings, add_pbx
from callbridge.services.voicemails import MessageLeft


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(secret=SECRET, auth_failure_delay=0.05) as s:
        s.monitor_dir = str(tmp_path / "monitor")
        s.voicemail_dir = str(tmp_path / "voicemail")
        (tmp_path / "monitor").mkdir()
        (tmp_path / "voicemail").mkdir()
        yield s


async def _pbx_copy(hub: Hub, voicemail_id: int) -> tuple[str, str] | None:
    async with hub.db.unit() as repos:
        return await repos.voicemails.pbx_copy_of(voicemail_id)


async def test_a_voicemail_deleted_at_the_pbx_waits_for_the_agent_then_its_files_go(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    hub = served.hub
    token = await add_agent_pbx(hub)
    cfg = config(served.url, token, sim, tmp_path, voicemail_dir=Path(sim.voicemail_dir))
    async with running(cfg):
        _, first = await sim.leave_voicemail(write_wav(tmp_path / "a.wav", 1.0, seed=3), mailbox="7001")
        _, second = await sim.leave_voicemail(write_wav(tmp_path / "b.wav", 1.0, seed=4), mailbox="7001")

        async def both_ready() -> bool:
            items = (await served.api.get("/api/v1/voicemails")).json()["items"]
            return len(items) == 2 and all(i["audio_status"] == "ready" for i in items)

        await eventually(both_ready, limit=20, what="two voicemails with audio")
    # The agent is gone. The older message is deleted here and at the PBX.
    items = (await served.api.get("/api/v1/voicemails")).json()["items"]
    older = min(items, key=lambda i: i["id"])
    async with hub.db.unit() as repos:
        stored = await repos.voicemails.get(older["id"])
    assert stored is not None
    stored_file = hub.settings.data_dir / "recordings" / stored.storage_key
    assert stored_file.exists()
    gone = await served.api.delete(f"/api/v1/voicemails/{older['id']}", params={"at_pbx": "true"})
    assert gone.status_code == 202, gone.text
    assert gone.json() == {"id": older["id"], "pbx_copy": "waiting"}
    assert not stored_file.exists()  # callbridge's copy goes at once
    assert (await served.api.get(f"/api/v1/voicemails/{older['id']}")).status_code == 404
    left = (await served.api.get("/api/v1/voicemails")).json()["items"]
    assert len(left) == 1 and left[0]["id"] != older["id"]
    assert hub.voicemail_pbx_copies is not None
    assert await hub.voicemail_pbx_copies.run_once() == 0  # nobody to ask
    assert await _pbx_copy(hub, older["id"]) == ("waiting", "")  # in the database, not in memory
    # Asterisk moved the message to Old meanwhile (listened to on the phone) and renumbered it:
    # the agent finds it by its msg_id.
    old = first.parent.parent / "Old"
    old.mkdir()
    for path in first.parent.glob(first.stem + ".*"):
        path.rename(old / path.name.replace("msg0000", "msg0003"))
    assert (old / "msg0003.txt").exists() and (old / "msg0003.wav").exists()

    async with running(cfg):  # the agent connects again: asked at once

        async def answered() -> bool:
            found = await _pbx_copy(hub, older["id"])
            return found is not None and found[0] != "waiting"

        await eventually(answered, limit=20, what="the agent's answer")
    status, detail = await _pbx_copy(hub, older["id"]) or ("", "")
    assert status == "deleted" and detail.startswith("Old/msg0003"), detail
    assert not list(old.glob("msg0003.*"))
    assert second.exists() and second.with_suffix(".wav").exists()  # the other message stays


def _message(folder: Path, stem: str, msg_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.txt").write_text(f"[message]\norigtime=1700000000\nmsg_id={msg_id}\n")
    (folder / f"{stem}.wav").write_bytes(b"RIFF")
    (folder / f"{stem}.WAV").write_bytes(b"RIFF")


def test_the_agent_deletes_a_messages_files_inside_its_voicemail_directory_only(tmp_path: Path) -> None:
    root = tmp_path / "voicemail"
    inbox = root / "default" / "7001" / "INBOX"
    _message(inbox, "msg0000", "1700000000-00000001")
    _message(inbox, "msg0001", "1700000000-00000002")
    answer = delete_message(root, "default/7001/1700000000-00000002")
    assert answer == {"result": "deleted", "detail": "INBOX/msg0001 (3 files)"}
    assert sorted(p.name for p in inbox.iterdir()) == ["msg0000.WAV", "msg0000.txt", "msg0000.wav"]
    again = delete_message(root, "default/7001/1700000000-00000002")
    assert again["result"] == "not_found"
    assert delete_message(root, "default/7002/1700000000-00000001")["result"] == "not_found"
    for bad in ("../7001/x", "default/../7001", "default/7001", "", "default/7001/a/b", "/etc/passwd"):
        assert delete_message(root, bad)["result"] == "refused", bad
    # A mailbox that is a symbolic link to elsewhere is not followed.
    outside = tmp_path / "elsewhere"
    _message(outside / "INBOX", "msg0000", "1700000000-00000009")
    os.symlink(outside, root / "default" / "7009")
    refused = delete_message(root, "default/7009/1700000000-00000009")
    assert refused["result"] == "refused" and "outside" in refused["detail"]
    assert (outside / "INBOX" / "msg0000.wav").exists()
    assert (inbox / "msg0000.wav").exists()


async def test_deleting_at_the_pbx_is_refused_with_words_where_it_cannot_be_done(
    app: object, hub: Hub
) -> None:
    """Yeastar documents no call that deletes a voicemail message, an Asterisk without the agent
    has nobody to delete files: 409 with the reason, nothing deleted. An agent who owns nothing
    deletes nothing (404)."""
    bob = await add_user(hub, "bob", Role.AGENT)
    await add_user(hub, "dave", Role.AGENT)  # owns nothing
    async with hub.db.unit() as repos:
        await add_pbx(
            repos.pbxes,
            "cloud",
            PbxKind.YEASTAR,
            YeastarSettings(
                base_url="https://pbx.example", client_id="id", client_secret="secret", webhook_secret="w"
            ),
        )
        await add_pbx(
            repos.pbxes,
            "direct",
            PbxKind.ASTERISK,
            AsteriskSettings(host="127.0.0.1", username="cb", secret="s"),
        )
        await repos.extensions.map("cloud", "2002", bob.id)
        await repos.extensions.map("direct", "7001", bob.id)
    await add_agent_pbx(hub, "office")
    assert hub.voicemails is not None
    at = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    ids = {}
    for pbx, mailbox in (("cloud", "2002"), ("direct", "7001@default")):
        message = MessageLeft(mailbox, f"call:{pbx}", "+14155550100", "", at, 3, "")
        vm, _, _ = await hub.voicemails.announce(pbx, message, None)
        ids[pbx] = vm.id
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]

    def client(token: str) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"}
        return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)

    async with client(await api_token(hub, "bob")) as bob_api, client(await api_token(hub, "dave")) as dave:
        for pbx, words in (("cloud", "no documented API call"), ("direct", "served by callbridge agent")):
            refused = await bob_api.delete(f"/api/v1/voicemails/{ids[pbx]}", params={"at_pbx": "true"})
            assert refused.status_code == 409, refused.text
            assert (
                refused.json()["error"]["code"] == "conflict" and words in refused.json()["error"]["message"]
            )
            assert (await bob_api.get(f"/api/v1/voicemails/{ids[pbx]}")).status_code == 200  # still there
        bad = await bob_api.delete(f"/api/v1/voicemails/{ids['cloud']}", params={"at_pbx": "maybe"})
        assert bad.status_code == 422
        stranger = await dave.delete(f"/api/v1/voicemails/{ids['cloud']}", params={"at_pbx": "true"})
        assert stranger.status_code == 404
        # The contract without at_pbx is unchanged: 204, gone here.
        plain = await bob_api.delete(f"/api/v1/voicemails/{ids['cloud']}")
        assert plain.status_code == 204 and plain.content == b""
        assert (await bob_api.get(f"/api/v1/voicemails/{ids['cloud']}")).status_code == 404
    assert await _pbx_copy(hub, ids["cloud"]) is None
