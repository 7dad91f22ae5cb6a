"""The pusher: takes calls from the durable outbox and writes them into each ERP.

The outbox row is written in the transaction that changes the call (see ``Hub._ingest_events``),
so a call the hub has is a call some ERP will get, whatever happens to the ERP or the hub in
between. The pusher claims due rows (moving them a lease ahead), writes each call, and records
the version it wrote: a change that came in meanwhile leaves the row waiting, and is written
next. A failure keeps the row with a capped, jittered back-off (or the ERP's ``Retry-After``);
it never loops fast. When a write succeeds after failures, the connector's other waiting calls
are made due at once: the ERP is back, there is no reason to wait out their back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from callbridge.crm.base import Connector, Pushed
from callbridge.domain.connectors import CallPush, ConnectorError, ErpBusy

log = logging.getLogger(__name__)

BATCH = 32
LEASE = timedelta(seconds=60)
PER_CONNECTOR = 8  # writes in flight to one ERP


class Job(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def connector_id(self) -> int: ...
    @property
    def call_id(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def ext_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one job: written (``result``) or to be tried again at ``retry_at``."""

    job: Job
    result: Pushed | None = None
    recording_url: str = ""
    error: str = ""
    retry_at: datetime | None = None


class OutboxHost(Protocol):
    """What the pusher needs from the hub (rows, calls, connectors)."""

    async def claim(self, at: datetime, limit: int, lease: timedelta) -> list[Job]: ...

    async def load(self, jobs: list[Job]) -> dict[int, CallPush | None]:
        """Each job's call as it is now (by job id); ``None`` when it is not to be written
        (gone, internal)."""
        ...

    async def connector(self, connector_id: int) -> Connector | None: ...

    async def finish(self, outcomes: list[Outcome], recovered: set[int]) -> None:
        """Record every outcome of a round in one transaction; ``recovered``: connectors that
        answered again after failing (their waiting calls may go at once)."""
        ...

    async def next_due_at(self) -> datetime | None: ...


def backoff(attempts: int, cap: float, base: float = 2.0) -> float:
    """Seconds to wait after the ``attempts``-th failure in a row: 2, 4, 8 … ``cap``, ±20 %."""
    delay = min(cap, base * 2.0 ** min(attempts, 20))
    return float(delay * random.uniform(0.8, 1.2))


class Pusher:
    def __init__(self, host: OutboxHost, *, max_backoff: float = 300.0, idle_poll: float = 5.0) -> None:
        self.host = host
        self.max_backoff = max_backoff
        self.idle_poll = idle_poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._limits: dict[int, asyncio.Semaphore] = {}
        self._failing: set[int] = set()
        self._finishing: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="connector-pusher")

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._flushed()

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the round: a wake during it means "look again"
            try:
                worked = await self.run_once(wait=False)
            except Exception as exc:  # the database is restarting: try again shortly
                log.warning("connector outbox: could not read due calls: %s", type(exc).__name__)
                worked = 0
            if worked:
                continue
            await self._flushed()
            wait = self.idle_poll
            try:
                due = await self.host.next_due_at()
            except Exception:
                due = None
            if due is not None:
                wait = min(wait, max(0.05, (due - datetime.now(UTC)).total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def run_once(self, *, wait: bool = True) -> int:
        """Claim the due calls, write them, record the outcomes; returns how many were taken.

        A round costs three short transactions whatever its size (claim, read the calls, record
        the outcomes): on SQLite, where writers take turns, a write per call would make the
        pusher and ingest queue behind each other."""
        jobs = await self.host.claim(datetime.now(UTC), BATCH, LEASE)
        if not jobs:
            return 0
        try:
            calls = await self.host.load(jobs)
        except Exception as exc:  # the database is away: the lease brings the jobs back
            log.warning("connector outbox: could not read %d calls: %s", len(jobs), type(exc).__name__)
            return len(jobs)
        outcomes = await asyncio.gather(*(self._push(job, calls.get(job.id)) for job in jobs))
        recovered = {o.job.connector_id for o in outcomes if o.result is not None} & self._failing
        for o in outcomes:
            if o.result is None:
                self._failing.add(o.job.connector_id)
        self._failing -= {o.job.connector_id for o in outcomes if o.result is not None} - {
            o.job.connector_id for o in outcomes if o.result is None
        }
        # The outcomes are recorded while the next round already claims and writes (one round
        # behind at most): a slow commit (SQLite waiting for its write lock) does not hold the
        # calls behind it. A call both rounds hold is written in order; its recorded version
        # only moves forward.
        await self._flushed()
        self._finishing = asyncio.create_task(self._finish(list(outcomes), recovered))
        if wait:
            await self._flushed()
        return len(jobs)

    async def _finish(self, outcomes: list[Outcome], recovered: set[int]) -> None:
        try:
            await self.host.finish(outcomes, recovered)
        except Exception as exc:  # not recorded: the lease brings them back (writes are idempotent)
            log.warning(
                "connector outbox: could not record %d outcomes: %s", len(outcomes), type(exc).__name__
            )

    async def _flushed(self) -> None:
        """Wait until the last round's outcomes are recorded."""
        if self._finishing is not None:
            task, self._finishing = self._finishing, None
            await task

    async def _push(self, job: Job, call: CallPush | None) -> Outcome:
        limit = self._limits.setdefault(job.connector_id, asyncio.Semaphore(PER_CONNECTOR))
        async with limit:
            try:
                if call is None:
                    return Outcome(job, Pushed("", "", "not written (internal call or call gone)"))
                connector = await self.host.connector(job.connector_id)
                if connector is None:
                    return Outcome(
                        job, error="the connector is gone or disabled", retry_at=self._later(job, None)
                    )
                result = await connector.push(call, job.ext_id)
                return Outcome(job, result, call.recording_url)
            except ConnectorError as exc:
                wait = exc.retry_after if isinstance(exc, ErpBusy) else None
                log.warning("connector %s: call %s not written: %s", job.connector_id, job.call_id, exc)
                return Outcome(job, error=str(exc), retry_at=self._later(job, wait))
            except Exception as exc:
                log.exception("connector %s: call %s not written", job.connector_id, job.call_id)
                return Outcome(
                    job, error=f"unexpected error: {type(exc).__name__}", retry_at=self._later(job, None)
                )

    def _later(self, job: Job, retry_after: float | None) -> datetime:
        delay = backoff(job.attempts, self.max_backoff)
        if retry_after is not None:
            delay = min(max(delay, retry_after), 3600.0)
        return datetime.now(UTC) + timedelta(seconds=delay)
