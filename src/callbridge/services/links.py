"""Keeps one long-lived link per configured PBX running, and knows how each one is doing.

A link that fails is restarted with capped exponential backoff. A link that gives up for a
reason no retry can fix (wrong credentials, blocked IP) waits much longer before the next try,
so a typo in a password does not hammer the PBX.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from callbridge.domain.errors import PbxRejected, PbxUnavailable
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.services.ports import EventSink, LinkStatus, PbxLink

log = logging.getLogger(__name__)

LinkFactory = Callable[[PbxRecord, Mapping[str, str], EventSink], PbxLink]
StatusReporter = Callable[[str, LinkStatus], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 1.0
    cap: float = 30.0
    after_rejection: float = 300.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.first * 2 ** max(0, failures - 1)))


class LinkSupervisor:
    def __init__(
        self,
        factories: Mapping[PbxKind, LinkFactory],
        sink: EventSink,
        *,
        backoff: Backoff | None = None,
        report: StatusReporter | None = None,
        report_every: float = 5.0,
    ) -> None:
        self._factories = factories
        self._sink = sink
        self._backoff = backoff or Backoff()
        self._report = report
        self._report_every = report_every
        self.links: dict[str, PbxLink] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._problems: dict[str, str] = {}
        self._reporter: asyncio.Task[None] | None = None

    def start(self, record: PbxRecord, secrets: Mapping[str, str]) -> PbxLink:
        """Build and run the link for ``record`` (replacing a running one of the same name)."""
        factory = self._factories.get(record.kind)
        if factory is None:
            raise PbxUnavailable(f"no driver for {record.kind.value} PBXs")
        link = factory(record, secrets, self._sink)
        self.links[record.name] = link
        self._problems.pop(record.name, None)
        old = self._tasks.pop(record.name, None)
        if old is not None:
            old.cancel()
        self._tasks[record.name] = asyncio.create_task(
            self._keep_running(link), name=f"pbx-link-{record.name}"
        )
        if self._report is not None and self._reporter is None:
            self._reporter = asyncio.create_task(self._report_loop(), name="pbx-link-status")
        return link

    def get(self, name: str) -> PbxLink:
        link = self.links.get(name)
        if link is None:
            raise PbxUnavailable(f"the hub has no running link to PBX {name!r}")
        return link

    def status(self, name: str) -> LinkStatus:
        link = self.links.get(name)
        if link is None:
            return LinkStatus(connected=False, detail="not running")
        status = link.status()
        problem = self._problems.get(name)
        if problem and not status.connected:
            return LinkStatus(False, problem, status.last_event_at, status.extra)
        return status

    async def _keep_running(self, link: PbxLink) -> None:
        failures = 0
        while True:
            try:
                await link.run()
                failures = 0
                delay = self._backoff.first
            except asyncio.CancelledError:
                raise
            except PbxRejected as exc:
                self._problems[link.name] = exc.message
                log.error(
                    "PBX %s refused the link: %s; next try in %.0f s",
                    link.name,
                    exc.message,
                    self._backoff.after_rejection,
                )
                delay = self._backoff.after_rejection
            except Exception as exc:
                failures += 1
                delay = self._backoff.delay(failures)
                self._problems[link.name] = str(exc) or type(exc).__name__
                log.warning(
                    "PBX %s link stopped (%s); restart in %.1f s", link.name, type(exc).__name__, delay
                )
            await asyncio.sleep(delay)

    async def _report_loop(self) -> None:
        assert self._report is not None
        while True:
            for name in list(self.links):
                try:
                    await self._report(name, self.status(name))
                except Exception:
                    log.exception("could not record the status of PBX %s", name)
            await asyncio.sleep(self._report_every)

    async def stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        self.links.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        for name in list(self._tasks):
            await self.stop(name)
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reporter
            self._reporter = None
        for link in list(self.links.values()):
            closer = getattr(link, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        self.links.clear()
