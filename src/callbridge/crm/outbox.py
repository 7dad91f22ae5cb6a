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
from datetime import UTC, datetime, timedelta
from typing import Protocol

from callbridge.crm.base import Connector, Pushed
from callbridge.domain.connectors import CallPush, ConnectorError, ErpBusy

log = logging.getLogger(__name__)

BATCH = 100
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


class OutboxHost(Protocol):
    """What the pusher needs from the hub (rows, calls, connectors)."""

    async def claim(self, at: datetime, limit: int, lease: timedelta) -> list[Job]: ...

    async def load(self, job: Job) -> CallPush | None:
        """The call as it is now; ``None`` when it is not to be written (gone, internal)."""
        ...

    async def connector(self, connector_id: int) -> Connector | None: ...

    async def pushed(self, job: Job, result: Pushed, recording_url: str, recovered: bool) -> None: ...

    async def retry(self, job: Job, error: str, at: datetime) -> None: ...

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

    async def _run(self) -> None:
        while True:
            try:
                worked = await self.run_once()
            except Exception as exc:  # the database is restarting: try again shortly
                log.warning("connector outbox: could not read due calls: %s", type(exc).__name__)
                worked = 0
            if worked:
                continue
            wait = self.idle_poll
            try:
                due = await self.host.next_due_at()
            except Exception:
                due = None
            if due is not None:
                wait = min(wait, max(0.05, (due - datetime.now(UTC)).total_seconds()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def run_once(self) -> int:
        """Claim and write the due calls; returns how many were taken."""
        jobs = await self.host.claim(datetime.now(UTC), BATCH, LEASE)
        if jobs:
            await asyncio.gather(*(self._push(job) for job in jobs))
        return len(jobs)

    async def _push(self, job: Job) -> None:
        limit = self._limits.setdefault(job.connector_id, asyncio.Semaphore(PER_CONNECTOR))
        async with limit:
            try:
                call = await self.host.load(job)
                if call is None:
                    await self.host.pushed(
                        job, Pushed("", "", "not written (internal call or call gone)"), "", False
                    )
                    return
                connector = await self.host.connector(job.connector_id)
                if connector is None:
                    await self.host.retry(job, "the connector is gone or disabled", self._later(job, None))
                    return
                result = await connector.push(call, job.ext_id)
                recovered = job.connector_id in self._failing
                self._failing.discard(job.connector_id)
                await self.host.pushed(job, result, call.recording_url, recovered)
            except ConnectorError as exc:
                self._failing.add(job.connector_id)
                wait = exc.retry_after if isinstance(exc, ErpBusy) else None
                log.warning("connector %s: call %s not written: %s", job.connector_id, job.call_id, exc)
                await self._retry(job, str(exc), self._later(job, wait))
            except Exception as exc:
                self._failing.add(job.connector_id)
                log.exception("connector %s: call %s not written", job.connector_id, job.call_id)
                await self._retry(job, f"unexpected error: {type(exc).__name__}", self._later(job, None))

    def _later(self, job: Job, retry_after: float | None) -> datetime:
        delay = backoff(job.attempts, self.max_backoff)
        if retry_after is not None:
            delay = min(max(delay, retry_after), 3600.0)
        return datetime.now(UTC) + timedelta(seconds=delay)

    async def _retry(self, job: Job, error: str, at: datetime) -> None:
        try:
            await self.host.retry(job, error, at)
        except Exception as exc:  # the lease expires and the row is taken again
            log.warning("connector outbox: could not note a failure: %s", type(exc).__name__)
