"""Server-side event filtering: Asterisk is asked (Action: Filter) to send only the events the
link uses; when the AMI user may not filter, the client filters alone and nothing else changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from callbridge.domain.events import CallEnded, Direction, Disposition, Event
from callbridge.pbx.asterisk.client import AmiClient, ClientSettings
from callbridge.pbx.asterisk.link import AsteriskConfig, AsteriskLink
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.services.ports import Originate

SECRET = "filter-test-secret"


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(username="hub", secret=SECRET, auth_failure_delay=0.05) as server:
        yield server


def client_for(sim: AmiSimulator, seen: list[str], **kw: object) -> AmiClient:
    settings = ClientSettings(
        host="127.0.0.1",
        port=sim.port,
        username="hub",
        secret=SECRET,
        connect_timeout=2.0,
        action_timeout=2.0,
        **kw,  # type: ignore[arg-type]
    )
    return AmiClient(settings, on_event=lambda m, _at: seen.append(m.get("Event")))


async def wait_until(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    for _ in range(int(limit / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def test_asterisk_is_asked_to_send_only_the_wanted_events(sim: AmiSimulator) -> None:
    seen: list[str] = []
    client = client_for(sim, seen, event_names=frozenset({"Hangup"}))
    await client.connect()
    try:
        assert client.server_filtered
        (sent,) = [m for m in sim.actions if m.get("Action") == "Filter"]
        assert sent.get("Operation") == "Add"
        assert sent.get("Filter") == "Event: (Hangup|OriginateResponse)"
        await sim.place_call("inbound_answered")
        await wait_until(lambda: len(seen) == 2)
        await asyncio.sleep(0.1)
        assert seen == ["Hangup", "Hangup"]
        # Only 4 events crossed the wire instead of ~25: the two Hangups, FullyBooted (sent with
        # the login answer, before the filter exists) and HangupRequest (the pattern is a prefix
        # match: over-including is harmless, the client drops it).
        assert client.events_read == 4
    finally:
        await client.close()


async def test_refused_filter_falls_back_to_filtering_here(sim: AmiSimulator) -> None:
    sim.denied_actions.add("Filter")  # an AMI user without write=system
    seen: list[str] = []
    client = client_for(sim, seen, event_names=frozenset({"Hangup"}))
    await client.connect()
    try:
        assert client.connected and not client.server_filtered
        await sim.place_call("inbound_answered")
        await wait_until(lambda: len(seen) == 2)
        await asyncio.sleep(0.1)
        assert seen == ["Hangup", "Hangup"]
        assert client.events_read > 10  # everything came, and was dropped here
        assert (await client.send_action("Ping")).get("Ping") == "Pong"
    finally:
        await client.close()


async def test_without_event_names_nothing_is_filtered(sim: AmiSimulator) -> None:
    seen: list[str] = []
    client = client_for(sim, seen)
    await client.connect()
    try:
        assert not client.server_filtered
        assert not [m for m in sim.actions if m.get("Action") == "Filter"]
        await sim.place_call("inbound_answered")
        await wait_until(lambda: "Hangup" in seen and seen.count("Hangup") == 2)
        assert {"Newchannel", "DialBegin", "BridgeEnter"} <= set(seen)
    finally:
        await client.close()


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)


@pytest.mark.parametrize("allowed", [True, False])
async def test_link_filters_to_the_tracker_events_and_calls_are_unchanged(
    sim: AmiSimulator, allowed: bool
) -> None:
    if not allowed:
        sim.denied_actions.add("Filter")
    sink = Collector()
    link = AsteriskLink(
        AsteriskConfig(
            name="lab", host="127.0.0.1", port=sim.port, username="hub", secret=SECRET, backoff_initial=0.05
        ),
        sink,
    )
    task = asyncio.create_task(link.run())
    try:
        await wait_until(lambda: link.status().connected)
        assert link.client.server_filtered is allowed
        sim.cel = True  # CEL events: read by nobody here, dropped by the PBX when it filters
        await sim.place_call("queue_abandoned", ring=0.0)
        call_id = await sim.place_call("outbound_answered", extension="1004", number="+442071838750")
        # Click-to-call still works: its OriginateResponse passes the filter.
        made = await link.originate(Originate(extension="1001", number="+14155550100"))
        assert made
        await wait_until(lambda: len([e for e in sink.events if isinstance(e, CallEnded)]) == 2)
        ended = [e for e in sink.events if isinstance(e, CallEnded)]
        assert [(e.disposition, e.answered_by) for e in ended] == [
            (Disposition.ABANDONED, ""),
            (Disposition.ANSWERED, ""),  # the outside party answered 1004's call
        ]
        assert ended[1].call_id == call_id
        started = [e for e in sink.events if getattr(e, "direction", None) is Direction.OUTBOUND]
        assert started
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
