"""A purge of a recording an agent uploaded asks that agent to delete the PBX's copy: AMI
simulator (MixMonitor) → agent upload → hub (uvicorn) → retention purge → ``delete_recording``
over the agent's link → the file is gone from the agent's recordings directory.

The agent deletes only files inside its recordings directory; a request made while the agent is
offline waits in the database and is delivered when it connects again (here: the real agent
process, started only after the purge)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text
from tests.agent.conftest import Served, add_agent_pbx
from tests.agent.procs import AgentProcess
from tests.agent.test_agent_link import SECRET, eventually
from tests.agent.test_agent_recordings import config, recorded_call, running, sim, until_status
from tests.conftest import sign_in

from callbridge.agent.uploads import delete_copy
from callbridge.pbx.asterisk.recordings import DirectoryRecordings
from callbridge.pbx.asterisk.simulator import AmiSimulator

__all__ = ["sim"]  # the fixture, used by name


async def _age_calls(served: Served, days: int = 40) -> None:
    """Make every call old enough for a 30-day retention rule."""
    async with served.hub.db.unit() as repos:
        await repos.session.execute(
            text("UPDATE calls SET started_at = :at"), {"at": datetime.now(UTC) - timedelta(days=days)}
        )


async def _recording_json(served: Served, call_id: int) -> dict[str, object]:
    answer = await served.api.get(f"/api/v1/calls/{call_id}")
    assert answer.status_code == 200
    recording = answer.json()["recording"]
    assert isinstance(recording, dict)
    return recording


async def _page(served: Served, call_id: int) -> str:
    async with httpx.AsyncClient(base_url=served.url) as browser:
        await sign_in(browser)
        page = await browser.get(f"/calls/{call_id}", headers={"accept": "text/html"})
    assert page.status_code == 200
    return page.text


async def _copy_status(served: Served, call_id: int, status: str) -> dict[str, object]:
    found: list[dict[str, object]] = []

    async def check() -> bool:
        rec = await _recording_json(served, call_id)
        copy = rec.get("pbx_copy")
        if isinstance(copy, dict) and copy["status"] == status:
            found.append(copy)
            return True
        return False

    await eventually(check, limit=20, what=f"PBX copy {status}")
    return found[0]


async def test_a_purge_asks_the_agent_to_delete_its_copy_inside_its_directory_only(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    token = await add_agent_pbx(served.hub)
    outside = tmp_path / "outside.wav"
    outside.write_bytes(b"RIFF not the agent's to delete")
    async with running(config(served.url, token, sim, tmp_path)):
        calls = []
        for _ in range(3):
            linkedid, path, _data = await recorded_call(sim, 1)
            calls.append((await until_status(served, linkedid, str(path), "ready"), path))
        (kept, kept_path), (gone, gone_path), (escaping, escaping_path) = calls
        assert all(r.via_agent for r, _ in calls)
        gone_path.unlink()  # cleaned up on the PBX meanwhile: the agent finds nothing
        # A reference that leads outside the recordings directory (the agent must refuse it).
        async with served.hub.db.unit() as repos:
            await repos.session.execute(
                text("UPDATE recordings SET reference = :ref WHERE id = :id"),
                {"ref": str(Path(sim.monitor_dir) / ".." / outside.name), "id": escaping.id},
            )
        await _age_calls(served)
        rule = await served.api.post("/api/v1/retention-rules", json={"older_than_days": 30})
        assert rule.status_code == 201
        purged = await served.hub.purge_recordings()
        assert sorted(c.recording_id for c in purged) == sorted(r.id for r, _ in calls)
        assert all(c.via_agent for c in purged)

        deleted = await _copy_status(served, kept.call_id, "deleted")
        assert not kept_path.exists()
        assert deleted["at"] is not None
        not_found = await _copy_status(served, gone.call_id, "not_found")
        assert gone_path.name in str(not_found["detail"])
        refused = await _copy_status(served, escaping.call_id, "refused")
        assert "outside the recordings directory" in str(refused["detail"])
        assert outside.read_bytes() == b"RIFF not the agent's to delete"
        assert escaping_path.exists()  # its own file was not the one named: untouched

    recording = await _recording_json(served, kept.call_id)
    assert recording["status"] == "purged" and recording["audio_url"] is None
    assert "The phone system's copy: deleted by its agent" in await _page(served, kept.call_id)
    assert "not deleted, the agent refused" in await _page(served, escaping.call_id)
    # Answered once: a later round asks nothing again.
    assert served.hub.pbx_copies is not None
    assert await served.hub.pbx_copies.run_once() == 0


async def test_a_request_for_an_offline_agent_waits_in_the_database_until_it_connects(
    served: Served, sim: AmiSimulator, tmp_path: Path
) -> None:
    token = await add_agent_pbx(served.hub)
    (tmp_path / "first").mkdir()
    async with running(config(served.url, token, sim, tmp_path / "first")):
        linkedid, path, _data = await recorded_call(sim, 1)
        recording = await until_status(served, linkedid, str(path), "ready")
    # The agent is gone; the purge asks for the copy's deletion anyway.
    await _age_calls(served)
    await served.api.post("/api/v1/retention-rules", json={"older_than_days": 30})
    assert [c.recording_id for c in await served.hub.purge_recordings()] == [recording.id]
    assert served.hub.pbx_copies is not None
    assert await served.hub.pbx_copies.run_once() == 0  # nobody to ask
    waiting = await _copy_status(served, recording.call_id, "waiting")
    assert waiting["detail"] is None
    async with served.hub.db.unit() as repos:
        row = (
            await repos.session.execute(
                text("SELECT pbx_copy FROM recordings WHERE id = :id"), {"id": recording.id}
            )
        ).scalar_one()
    assert row == "waiting"  # kept in the database, not in memory
    assert "to be deleted by its agent (asked when it connects)" in await _page(served, recording.call_id)
    assert path.exists()

    # The real agent process connects later: it is asked at once and deletes the file.
    proc = AgentProcess(tmp_path / "agent", served.url, token, sim.port, SECRET)
    proc.config.write_text(
        proc.config.read_text().replace(
            "[ami]", f'recordings_dir = "{sim.monitor_dir}"\nupload_settle_seconds = 0.0\n[ami]'
        )
    )
    proc.start()
    try:
        await _copy_status(served, recording.call_id, "deleted")
        assert not path.exists()
        await eventually(lambda: "deleted: the hub purged it" in proc.log_text(), limit=10, what="agent log")
    finally:
        await asyncio.to_thread(proc.stop)


def test_the_agent_deletes_only_regular_files_inside_its_directory(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "call.wav"
    inside.write_bytes(b"x")
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    (root / "link.wav").symlink_to(secret)
    directory = DirectoryRecordings(root)

    for reference in (
        str(secret),  # absolute, outside
        "../secret.txt",  # relative escape
        str(root / "sub" / ".." / ".." / "secret.txt"),
        str(root / "link.wav"),  # a symbolic link that leads outside
    ):
        answer = delete_copy(directory, reference)
        assert answer["result"] == "refused", reference
        assert "outside the recordings directory" in answer["detail"]
    assert secret.read_text() == "keep me"
    assert delete_copy(directory, str(root))["result"] == "refused"
    assert delete_copy(directory, "sub")["result"] == "refused"  # a directory
    assert delete_copy(directory, "")["result"] == "refused"
    assert delete_copy(directory, "a\0b")["result"] == "refused"
    assert root.is_dir() and (root / "sub").is_dir()
    assert delete_copy(directory, "sub/missing.wav") == {
        "result": "not_found",
        "detail": "no file missing.wav in the recordings directory",
    }
    assert delete_copy(directory, "sub/call.wav") == {"result": "deleted", "detail": "call.wav"}
    assert not inside.exists()
    if os.geteuid() != 0:  # root may delete anything: the permission case needs a plain user
        locked = root / "locked"
        locked.mkdir()
        (locked / "a.wav").write_bytes(b"x")
        locked.chmod(0o500)
        try:
            answer = delete_copy(directory, str(locked / "a.wav"))
            assert answer["result"] == "refused" and "permissions" in answer["detail"]
        finally:
            locked.chmod(0o700)
