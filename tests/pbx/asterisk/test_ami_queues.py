"""Queues over AMI: scripted app_queue calls (the simulator follows ``reference/asterisk_ami.md``
§2.7 and writes the queue_log lines app_queue writes) go through the link's tracker; the queue
events fold into visits and figures, and the same figures come out of the queue_log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from callbridge.domain.calls import CallRecord
from callbridge.domain.events import (
    CallEvent,
    Event,
    MemberState,
    QueueCompleted,
    QueueEvent,
    QueueJoined,
    QueueLeft,
    QueueMemberChanged,
    QueueOutcome,
)
from callbridge.domain.queues import QueueFigures, QueueSettings, QueueVisit, queue_figures
from callbridge.pbx.asterisk.codec import Message
from callbridge.pbx.asterisk.link import AsteriskConfig, AsteriskLink
from callbridge.pbx.asterisk.queue_log import parse_queue_log
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.pbx.asterisk.tracker import CallTracker, TrackerConfig

SECRET = "queue-test-secret"


class Collected:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
async def sim() -> AsyncIterator[AmiSimulator]:
    async with AmiSimulator(username="hub", secret=SECRET, timestamps=True, virtual_time=True) as server:
        yield server


async def linked(sim: AmiSimulator) -> tuple[AsteriskLink, Collected, asyncio.Task[None]]:
    sink = Collected()
    link = AsteriskLink(
        AsteriskConfig(name="office", host="127.0.0.1", port=sim.port, username="hub", secret=SECRET), sink
    )
    task = asyncio.create_task(link.run())
    for _ in range(200):
        if link.client.connected and sim.sessions:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the connect's snapshot (CoreShowChannels, QueueStatus, QueueSummary)
    return link, sink, task


async def settle(sink: Collected, count: int = 0) -> None:
    last = -1
    while len(sink.events) != last:
        last = len(sink.events)
        await asyncio.sleep(0.1)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def visits_of(events: list[Event]) -> list[QueueVisit]:
    by_call: dict[str, list[CallEvent]] = {}
    for e in events:
        if isinstance(e, CallEvent):
            by_call.setdefault(e.call_id, []).append(e)
    out: list[QueueVisit] = []
    for call_id, items in by_call.items():
        out += CallRecord.fold("office", call_id, items).queue_visits
    return out


async def play_scenarios(sim: AmiSimulator) -> dict[str, str]:
    """Answered (after a ring not answered), abandoned, short abandon, timed out, full, and a
    pause with a reason: the scenarios of the issue, one after the other on the virtual clock."""
    sim.add_queue_member("sales", "1001", dynamic=True)
    sim.add_queue_member("sales", "1002", dynamic=True)
    ids = {}
    ids["answered"] = await sim.queue_call(
        "sales",
        "answered",
        wait=12,
        talk=30,
        answer_by="1001",
        missed=["1002"],
        miss_ring=5,
        caller="+14155550101",
    )
    await sim._pause(3)
    sim.pause_member("sales", "1002", True, "lunch")
    await sim._pause(600)
    ids["abandoned"] = await sim.queue_call("sales", "abandoned", wait=40, caller="+14155550102")
    ids["short"] = await sim.queue_call("sales", "abandoned", wait=2, caller="+14155550103")
    sim.pause_member("sales", "1002", False)
    ids["timeout"] = await sim.queue_call("sales", "timeout", wait=60, caller="+14155550104")
    ids["full"] = await sim.queue_call("sales", "full", caller="+14155550105")
    ids["late"] = await sim.queue_call(
        "sales", "answered", wait=25, talk=10, answer_by="1002", caller="+14155550106", hangup_by="agent"
    )
    return ids


async def test_queue_scenarios_give_the_right_visits_and_figures(sim: AmiSimulator) -> None:
    _link, sink, task = await linked(sim)
    try:
        start = datetime.fromtimestamp(sim.now(), UTC)
        ids = await play_scenarios(sim)
        end = datetime.fromtimestamp(sim.now(), UTC) + timedelta(seconds=1)
        await settle(sink)
    finally:
        await stop(task)
    visits = {v.outcome: v for v in visits_of(sink.events) if v.outcome is not QueueOutcome.ANSWERED}
    answered = [v for v in visits_of(sink.events) if v.outcome is QueueOutcome.ANSWERED]
    assert [(v.agent, v.wait_seconds, v.talk_seconds, v.rang, v.missed) for v in answered] == [
        ("1001", 12, 30, ("1002", "1001"), ("1002",)),
        ("1002", 25, 10, ("1002",), ()),
    ]
    assert visits[QueueOutcome.TIMEOUT].wait_seconds == 60
    assert visits[QueueOutcome.FULL].wait_seconds == 0
    # Each call's record says which queue, how long the caller waited and how it ended.
    per_call = {
        call_id: CallRecord.fold(
            "office", call_id, [e for e in sink.events if isinstance(e, CallEvent) and e.call_id == call_id]
        ).summary()
        for call_id in ids.values()
    }
    shown = {
        k: (s.queue.queue, s.queue.wait_seconds, s.queue.outcome)
        for k, s in ((k, per_call[i]) for k, i in ids.items())
        if s.queue
    }
    assert shown == {
        "answered": ("sales", 12, QueueOutcome.ANSWERED),
        "abandoned": ("sales", 40, QueueOutcome.ABANDONED),
        "short": ("sales", 2, QueueOutcome.ABANDONED),
        "timeout": ("sales", 60, QueueOutcome.TIMEOUT),
        "full": ("sales", 0, QueueOutcome.FULL),
        "late": ("sales", 25, QueueOutcome.ANSWERED),
    }
    assert per_call[ids["abandoned"]].disposition is not None
    assert per_call[ids["abandoned"]].disposition.value == "abandoned"
    members = [e for e in sink.events if isinstance(e, QueueMemberChanged)]
    f = queue_figures("sales", visits_of(sink.events), QueueSettings(sl_seconds=20), members, start, end)
    assert (f.offered, f.answered, f.abandoned, f.short_abandoned, f.timed_out, f.full) == (4, 2, 1, 1, 1, 1)
    assert f.answer_rate == 0.5
    assert f.service_level == 0.25  # 12 s ≤ 20 s; 25 s is not
    assert (f.avg_answer_seconds, f.max_wait_seconds, f.avg_handle_seconds) == (18.5, 60, 20.0)
    assert f.avg_wait_seconds == round((12 + 40 + 60 + 25) / 4, 1)
    a1, a2 = f.agents["1001"], f.agents["1002"]
    assert (a1.answered, a1.ring_no_answer, a1.talk_seconds) == (1, 0, 30)
    assert (a2.answered, a2.ring_no_answer, a2.talk_seconds) == (1, 1, 10)
    assert a2.paused_seconds_by_reason == {"lunch": 600 + 40 + 2}
    assert a1.paused_seconds_by_reason == {}
    assert a1.logged_in_seconds == round((end - start).total_seconds())
    # The cross-check: Asterisk's own queue_log, read back, gives the very same figures.
    log = parse_queue_log(sim.queue_log, "office")
    assert log.errors == []
    from_log = queue_figures(
        "sales",
        _visits_by_call(log.events),
        QueueSettings(sl_seconds=20),
        [e for e in log.events if isinstance(e, QueueMemberChanged)],
        start,
        end,
    )
    assert _all(from_log) == _all(f)


def _visits_by_call(events: list[Event]) -> list[QueueVisit]:
    from callbridge.domain.queues import fold_visits

    by_call: dict[str, list[QueueEvent]] = {}
    for e in events:
        if isinstance(e, QueueEvent):
            by_call.setdefault(e.call_id, []).append(e)
    return [v for items in by_call.values() for v in fold_visits(items)]


def _all(f: QueueFigures) -> tuple[object, ...]:
    agents = {
        ext: (a.answered, a.ring_no_answer, a.talk_seconds, a.logged_in_seconds, a.paused_seconds_by_reason)
        for ext, a in sorted(f.agents.items())
    }
    return f.as_dict(), agents


def test_a_queue_log_line_that_cannot_be_read_is_reported_by_number_and_skipped() -> None:
    lines = [
        "1765000000|1765000000.1|sales|NONE|ENTERQUEUE||+14155550101|1",
        "garbage without pipes",
        "1765000009|1765000000.1|sales|PJSIP/1001|CONNECT|nine|1765000000.2|3",
        "17650000xx|1765000000.1|sales|NONE|ABANDON|1|1|3",
        "1765000010|1765000000.1|sales|PJSIP/1001|CONNECT|9|1765000000.2|3",
        "1765000040|1765000000.1|sales|PJSIP/1001|COMPLETECALLER|9|30|1",
        "1765000041|NONE|NONE|NONE|QUEUESTART|",
    ]
    log = parse_queue_log(lines, "office")
    assert [n for n, _ in log.errors] == [2, 3, 4]
    assert "hold time" in log.errors[1][1]
    kinds = [e.kind for e in log.events]
    assert kinds == ["queue_joined", "queue_connected", "queue_completed"]
    (visit,) = _visits_by_call(log.events)
    assert (visit.agent, visit.wait_seconds, visit.talk_seconds, visit.outcome) == (
        "1001",
        9,
        30,
        QueueOutcome.ANSWERED,
    )


def test_a_queue_event_for_a_call_the_tracker_never_saw_is_counted() -> None:
    tracker = CallTracker(TrackerConfig(pbx="office"))
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    snapshot = [
        ("Channel", "PJSIP/trunk-00000009"),
        ("ChannelStateDesc", "Up"),
        ("CallerIDNum", "+14155550199"),
        ("CallerIDName", "Someone"),
        ("Context", "from-trunk"),
        ("Exten", "5551000"),
        ("Uniqueid", "1765000000.9"),
        ("Linkedid", "1765000000.9"),
    ]
    out = tracker.feed(
        Message.from_pairs(
            [
                ("Event", "AgentComplete"),
                *snapshot,
                ("Queue", "sales"),
                ("Interface", "PJSIP/1001"),
                ("MemberName", "Ext 1001"),
                ("HoldTime", "14"),
                ("TalkTime", "50"),
                ("Reason", "agent"),
            ]
        ),
        now,
    )
    done = [e for e in out if isinstance(e, QueueCompleted)]
    assert len(done) == 1 and done[0].call_id == "1765000000.9"
    assert tracker.queue_orphans == 1
    (visit,) = CallRecord.fold(
        "office", "1765000000.9", [e for e in out if isinstance(e, CallEvent)]
    ).queue_visits
    assert (visit.outcome, visit.agent, visit.wait_seconds, visit.talk_seconds) == (
        QueueOutcome.ANSWERED,
        "1001",
        14,
        50,
    )
    assert visit.entered_at == now - timedelta(seconds=64)


async def test_queue_status_at_connect_and_after_a_reconnect_rebuilds_members(sim: AmiSimulator) -> None:
    sim.add_queue_member("support", "2001")
    sim.add_queue_member("support", "2002")
    sim.pause_member("support", "2002", True, "training")
    link, sink, task = await linked(sim)
    try:
        await settle(sink)
        first = [e for e in sink.events if isinstance(e, QueueMemberChanged)]
        assert {(e.extension, e.state, e.paused, e.reason) for e in first} == {
            ("2001", MemberState.AVAILABLE, False, ""),
            ("2002", MemberState.AVAILABLE, True, "training"),
        }
        assert "support" in link.tracker.queues
        asked = [m.get("Action") for m in sim.actions]
        assert "QueueStatus" in asked and "QueueSummary" in asked
        # While the link is away, 2001 is paused; after the reconnect the snapshot says so.
        sim.drop_connections()
        sim.pause_member("support", "2001", True, "meeting")
        for _ in range(100):
            if [m.get("Action") for m in sim.actions].count("QueueStatus") == 2:
                break
            await asyncio.sleep(0.05)
        await settle(sink)
        later = [e for e in sink.events if isinstance(e, QueueMemberChanged)][len(first) :]
        assert [(e.extension, e.paused, e.reason) for e in later] == [("2001", True, "meeting")]
    finally:
        await stop(task)


def test_queue_events_survive_the_agent_round_trip() -> None:
    from callbridge.domain.events import event_from_dict

    at = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    for event in (
        QueueJoined(pbx="p", at=at, call_id="c", queue="q", position=2),
        QueueLeft(pbx="p", at=at, call_id="c", queue="q", outcome=QueueOutcome.TIMEOUT, wait_seconds=60),
        QueueMemberChanged(
            pbx="p", at=at, queue="q", extension="1001", change="paused", paused=True, reason="x"
        ),
    ):
        assert event_from_dict(event.to_dict()) == event
    bad = QueueJoined(pbx="p", at=at, call_id="c", queue="q", position=2).to_dict() | {"position": "2"}
    with pytest.raises(Exception, match="whole number"):
        event_from_dict(bad)
