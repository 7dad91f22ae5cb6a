"""Keep or purge: retention rules decide which stored recordings' files are deleted; a legal hold
overrides every rule.

A recording is purged when any rule matches its call (the first matching rule, by id, is the
reason kept). Purging deletes the stored file and marks the row ``purged`` with the reason; the
row, the call and its comments stay. The database is marked first, then the file is deleted: a
hold set at that very moment wins (the mark refuses a held row), and a crash in between leaves
no row that points to a deleted file.

A recording an agent uploaded also has a copy on the PBX (Asterisk's MixMonitor file). Its purge
marks that copy ``waiting`` in the same commit; the :class:`PbxCopyDeleter` asks the PBX's agent
to delete it (action ``delete_recording``) when the agent is connected to this hub process, now
or when it connects again, and keeps the answer (deleted, not_found, refused) in the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from callbridge.domain.errors import CallbridgeError, PbxTimeout, PbxUnavailable, StorageUnavailable
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

    async def mark_purged(self, recording_id: int, reason: str, *, pbx_copy: bool = False) -> bool: ...


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
                    marked = await store.mark_purged(
                        found.recording_id, found.reason, pbx_copy=found.via_agent
                    )
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
                    "recording %s of call %s (%s) purged: %s%s",
                    found.recording_id,
                    found.call_id,
                    found.pbx,
                    found.reason,
                    "; the PBX's agent is asked to delete its copy" if found.via_agent else "",
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
        on_purged: Callable[[], None] | None = None,
    ) -> None:
        self._units = units
        self._storage = storage
        self._on_purged = on_purged
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
                if self._on_purged is not None and any(p.via_agent for p in purged):
                    self._on_purged()  # PBX copies to delete: ask the agents now
            self.runs += 1
            await asyncio.sleep(self.interval)


# -- the PBX's copy ---------------------------------------------------------------------------------

PBX_COPY_ANSWERS = ("deleted", "not_found", "refused")


class PbxCopy(Protocol):
    """What the PBX keeps a copy of: a purged recording, a deleted voicemail."""

    @property
    def id(self) -> int: ...

    @property
    def reference(self) -> str: ...

    @property
    def call_id(self) -> int | None: ...


class PbxCopyRows(Protocol):
    async def pbx_copies_waiting_pbxes(self) -> list[str]: ...

    async def pbx_copies_waiting(self, pbx: str, limit: int) -> Sequence[PbxCopy]: ...

    async def record_pbx_copy(self, item_id: int, status: str, detail: str, /) -> None: ...


class AgentCaller(Protocol):
    """The connected agent of a PBX (:class:`~callbridge.services.agents.AgentLink`)."""

    async def call(self, name: str, args: dict[str, Any], wait: float | None = None) -> Any: ...


PbxCopyUnits = Callable[[], AbstractAsyncContextManager[PbxCopyRows]]
# The connected agent of a PBX in this process, or None.
AgentFor = Callable[[str], "AgentCaller | None"]


class PbxCopyDeleter(BackgroundWorker):
    """Asks agents to delete the PBX's copy of purged recordings; requests wait in the database
    (``recordings.pbx_copy = 'waiting'``) until the agent answers. It looks when woken (a purge,
    an agent that connects) and every ``interval`` seconds (a purge by the CLI, an agent
    connected to another hub worker)."""

    task_name = "recording-pbx-copies"

    def __init__(
        self,
        units: PbxCopyUnits,
        agent_for: AgentFor,
        *,
        interval: float = 60.0,
        action: str = "delete_recording",
        what: str = "recording",
    ) -> None:
        self._units = units
        self._agent_for = agent_for
        self.interval = interval
        self._wake = asyncio.Event()
        # The agent's action and the word in the log: the same mechanism deletes a deleted
        # voicemail's message at the PBX (``delete_voicemail``).
        self.action = action
        self.what = what
        self.task_name = f"{what}-pbx-copies"

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except Exception as exc:  # the database may be restarting: the next round tries again
                log.warning("PBX copies of %ss: not asked now (%s)", self.what, type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def run_once(self) -> int:
        """Ask the connected agents about every waiting copy; returns how many were answered."""
        async with self._units() as rows:
            pbxes = await rows.pbx_copies_waiting_pbxes()
        answered = 0
        for pbx in pbxes:
            agent = self._agent_for(pbx)
            if agent is not None:
                answered += await self.deliver(pbx, agent)
        return answered

    async def deliver(self, pbx: str, agent: AgentCaller) -> int:
        answered = 0
        while True:
            async with self._units() as rows:
                waiting = await rows.pbx_copies_waiting(pbx, 100)
            for recording in waiting:
                try:
                    value = await agent.call(self.action, {"reference": recording.reference})
                except (PbxUnavailable, PbxTimeout) as exc:
                    log.info(
                        "%s %s (%s): the PBX's copy stays to be deleted; the agent did not answer (%s)",
                        self.what,
                        recording.id,
                        pbx,
                        exc.message,
                    )
                    return answered  # asked again when the agent connects, or next round
                except CallbridgeError as exc:  # e.g. an agent too old to know the action
                    status, detail = "refused", exc.message
                else:
                    status, detail = _answer(value)
                async with self._units() as rows:
                    await rows.record_pbx_copy(recording.id, status, detail)
                answered += 1
                log.log(
                    logging.INFO if status != "refused" else logging.WARNING,
                    "%s %s of call %s (%s): the PBX's copy %s%s",
                    self.what,
                    recording.id,
                    recording.call_id,
                    pbx,
                    {"deleted": "was deleted by the agent", "not_found": "was not found by the agent"}.get(
                        status, "was not deleted: the agent refused"
                    ),
                    f" ({detail})" if detail else "",
                )
            if len(waiting) < 100:
                return answered


def _answer(value: Any) -> tuple[str, str]:
    if isinstance(value, dict) and value.get("result") in PBX_COPY_ANSWERS:
        return str(value["result"]), str(value.get("detail") or "")[:500]
    return "refused", "the agent gave an answer the hub does not understand"
