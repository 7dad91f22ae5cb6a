"""Keep or purge: retention rules decide which stored recordings' files are deleted; a legal hold
overrides every rule.

A recording is purged when any rule matches its call (the first matching rule, by id, is the
reason kept). Purging deletes the stored file and marks the row ``purged`` with the reason; the
row, the call and its comments stay. The database is marked first, then the file is deleted: a
hold set at that very moment wins (the mark refuses a held row), and a crash in between leaves
no row that points to a deleted file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Protocol

from callbridge.domain.errors import StorageUnavailable
from callbridge.domain.recordings import PurgeCandidate, RetentionRule
from callbridge.services.background import BackgroundWorker

log = logging.getLogger(__name__)

BATCH = 500
DRY_RUN_LIMIT = 100_000


class PurgeStore(Protocol):
    async def rules(self) -> list[RetentionRule]: ...

    async def purge_candidates(
        self, rule: RetentionRule, at: datetime, limit: int
    ) -> list[PurgeCandidate]: ...

    async def mark_purged(self, recording_id: int, reason: str) -> bool: ...


class FileDeleter(Protocol):
    async def delete(self, key: str) -> None: ...


PurgeUnits = Callable[[], AbstractAsyncContextManager[PurgeStore]]


async def purge(
    units: PurgeUnits, storage: FileDeleter, *, at: datetime, dry_run: bool = False
) -> list[PurgeCandidate]:
    """Purge (or, with ``dry_run``, list) what the rules say at ``at``; returns each recording
    once, with the reason."""
    async with units() as store:
        rules = await store.rules()
    done: dict[int, PurgeCandidate] = {}
    for rule in rules:
        if dry_run:
            async with units() as store:
                for found in await store.purge_candidates(rule, at, DRY_RUN_LIMIT):
                    done.setdefault(found.recording_id, found)
            continue
        while True:
            async with units() as store:
                batch = [
                    c for c in await store.purge_candidates(rule, at, BATCH) if c.recording_id not in done
                ]
            if not batch:
                break
            for found in batch:
                async with units() as store:
                    marked = await store.mark_purged(found.recording_id, found.reason)
                done[found.recording_id] = found
                if not marked:  # put on hold (or purged by another worker) meanwhile
                    del done[found.recording_id]
                    continue
                try:
                    if found.storage_key:
                        await storage.delete(found.storage_key)
                except (OSError, StorageUnavailable) as exc:
                    log.warning(
                        "recording %s of call %s: marked purged but its file %s could not be deleted (%s)",
                        found.recording_id,
                        found.call_id,
                        found.storage_key,
                        type(exc).__name__,
                    )
                log.info(
                    "recording %s of call %s (%s) purged: %s",
                    found.recording_id,
                    found.call_id,
                    found.pbx,
                    found.reason,
                )
            if len(batch) < BATCH:
                break
    return list(done.values())


class RetentionWorker(BackgroundWorker):
    """Runs :func:`purge` every ``interval`` seconds (daily by default); owned by the app's lifespan."""

    task_name = "recording-retention"

    def __init__(
        self,
        units: PurgeUnits,
        storage: FileDeleter,
        interval: float,
        first_delay: float,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._units = units
        self._storage = storage
        self.interval = interval
        self.first_delay = first_delay
        self._clock = clock or (lambda: datetime.now(UTC))
        self.runs = 0

    async def run(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                purged = await purge(self._units, self._storage, at=self._clock())
            except Exception as exc:  # the database may be restarting: the next round tries again
                log.warning("recording retention: the purge did not run (%s)", type(exc).__name__)
            else:
                if purged:
                    log.info("recording retention: %d recordings purged", len(purged))
            self.runs += 1
            await asyncio.sleep(self.interval)
