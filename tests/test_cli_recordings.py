"""`callbridge recordings purge [--dry-run]`, run for real in a subprocess."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import FAST_HASHER
from tests.test_cli import run

from callbridge.config import Settings
from callbridge.hub import Hub
from callbridge.store.recordings import recordings


async def _world(data_dir: Path) -> tuple[int, Path]:
    """A call recorded 40 days ago whose audio is stored, a rule "older than 30 days"; the
    recording's id and its file."""
    from tests.web.test_recording_use import recorded
    from tests.web.test_recordings_api import setup_world

    hub = Hub.build(Settings(data_dir=data_dir, start_pbx_links=False), hasher=FAST_HASHER)
    await hub.prepare()
    monitor = data_dir / "monitor"
    monitor.mkdir()
    await setup_world(hub, monitor)
    call = await recorded(hub, monitor, "cli1", days_ago=40)
    assert hub.fetcher is not None
    await hub.fetcher.run_once()
    async with hub.db.unit() as repos:
        [rec] = await repos.recordings.for_call(call)
        await repos.retention.add(30, "", "", "")
    await hub.close()
    assert hub.storage is not None and rec.storage_key
    return rec.id, hub.storage.path(rec.storage_key)


async def _status(data_dir: Path, recording_id: int) -> tuple[str, str]:
    hub = Hub.build(Settings(data_dir=data_dir, start_pbx_links=False))
    async with hub.db.unit() as repos:
        row = (await repos.session.execute(recordings.select().where(recordings.c.id == recording_id))).one()
    await hub.close()
    return row.status, row.reason


def test_purge_dry_run_then_purge(tmp_path: Path) -> None:
    recording_id, file = asyncio.run(_world(tmp_path))
    assert file.is_file()
    dry = run(tmp_path, "recordings", "purge", "--dry-run").stdout
    assert f"would purge recording {recording_id} (call " in dry
    assert "retention rule 1: older than 30 days" in dry and "1 recording would be purged." in dry
    assert file.is_file() and asyncio.run(_status(tmp_path, recording_id))[0] == "ready"

    done = run(tmp_path, "recordings", "purge").stdout
    assert f"purged recording {recording_id}" in done and "1 recording purged." in done
    assert not file.exists()
    assert asyncio.run(_status(tmp_path, recording_id)) == ("purged", "retention rule 1: older than 30 days")
    assert "0 recordings purged." in run(tmp_path, "recordings", "purge").stdout
