"""The link supervisor: restarts failing links with backoff, waits long after a refusal."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from callbridge.domain.errors import PbxRejected, PbxUnavailable
from callbridge.domain.events import Event, Presence, PresenceChanged
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.services.links import Backoff, LinkSupervisor
from callbridge.services.ports import EventSink, LinkStatus, Originate


class FakeLink:
    def __init__(self, name: str, sink: EventSink, script: list[str]) -> None:
        self.name = name
        self.sink = sink
        self.script = script
        self.runs = 0
        self.up = False

    def status(self) -> LinkStatus:
        return LinkStatus(connected=self.up, detail="fake")

    async def run(self) -> None:
        self.runs += 1
        step = self.script.pop(0) if self.script else "hold"
        if step == "crash":
            raise ConnectionResetError("gone")
        if step == "reject":
            raise PbxRejected("authentication failed: check the AMI user and secret")
        self.up = True
        await self.sink(
            PresenceChanged(
                pbx=self.name, at=datetime.now(UTC), extension="1001", presence=Presence.AVAILABLE
            )
        )
        await asyncio.Event().wait()

    async def originate(self, request: Originate) -> str:
        return "x"

    async def hangup(self, call_id: str) -> None:
        return None

    async def redirect(self, call_id: str, destination: str) -> None:
        return None


def _record(name: str = "p1") -> PbxRecord:
    return PbxRecord(id=1, name=name, kind=PbxKind.ASTERISK)


async def _until(condition: object, limit: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_restarts_after_crashes_and_feeds_sink() -> None:
    got: list[Event] = []
    links: list[FakeLink] = []

    async def sink(event: Event) -> None:
        got.append(event)

    def factory(record: PbxRecord, secrets: Mapping[str, str], s: EventSink) -> FakeLink:
        links.append(FakeLink(record.name, s, ["crash", "crash", "ok"]))
        return links[-1]

    sup = LinkSupervisor({PbxKind.ASTERISK: factory}, sink, backoff=Backoff(first=0.01, cap=0.02))
    sup.start(_record(), {})
    await _until(lambda: got)
    assert links[0].runs == 3
    assert sup.status("p1").connected
    await sup.close()
    assert sup.links == {}


async def test_rejection_waits_long_and_reports_reason() -> None:
    link = FakeLink("p1", lambda e: asyncio.sleep(0), ["reject"])  # type: ignore[arg-type,return-value]
    reports: list[tuple[str, LinkStatus]] = []

    async def report(name: str, status: LinkStatus) -> None:
        reports.append((name, status))

    sup = LinkSupervisor(
        {PbxKind.ASTERISK: lambda r, s, k: link},  # type: ignore[arg-type,return-value]
        lambda e: asyncio.sleep(0),  # type: ignore[arg-type,return-value]
        backoff=Backoff(first=0.01, cap=0.02, after_rejection=60),
        report=report,
        report_every=0.01,
    )
    sup.start(_record(), {})
    await _until(lambda: any("authentication failed" in s.detail for _, s in reports))
    await asyncio.sleep(0.1)
    assert link.runs == 1  # no reconnect storm after a refusal
    assert not sup.status("p1").connected
    await sup.close()


async def test_unknown_link_is_unavailable() -> None:
    sup = LinkSupervisor({}, lambda e: asyncio.sleep(0))  # type: ignore[arg-type,return-value]
    with pytest.raises(PbxUnavailable):
        sup.get("nope")
    with pytest.raises(PbxUnavailable):
        sup.start(_record(), {})
    assert sup.status("nope").detail == "not running"
