"""Replay the real Asterisk 22 captures through codec + tracker and check the call log truth.

Expected values come from reading the captures with ``reference/asterisk_ami.md`` §2:
- answered: trunk channel (context from-trunk) ⇒ inbound; DialBegin to PJSIP/1001, DialEnd ANSWER
  ⇒ answered by 1001; CEL CHAN_START 02:04:57, ANSWER 02:04:58, LINKEDID_END 02:05:00 and
  ANSWEREDTIME_MS=2003 / DIALEDTIME_MS=3015 ⇒ ~1 s ringing, ~2 s talk; the first HangupRequest
  is on 1001's channel ⇒ the callee hung up.
- missed: DialEnd CANCEL after the trunk's HangupRequest (cause 127/487 = carrier CANCEL) ⇒
  missed, caller hung up; CHAN_START 02:05:05 → LINKEDID_END 02:05:15 ⇒ ~10 s ringing.
- busy: DialEnd BUSY (486) ⇒ busy, 1001's side refused, no ringing time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CallStarted,
    Direction,
    Disposition,
    Event,
    HangupSide,
    MemberState,
    Presence,
    PresenceChanged,
    QueueMemberChanged,
)
from callbridge.pbx.asterisk.codec import Message, parse_stream
from callbridge.pbx.asterisk.tracker import CallTracker, TrackerConfig

CAPTURES = Path(__file__).resolve().parents[2] / "data" / "captures" / "asterisk"


def replay(name: str) -> tuple[CallTracker, list[Event]]:
    tracker = CallTracker(TrackerConfig(pbx="lab", trunk_patterns=("trunk",), default_region="US"))
    msgs = [r for r in parse_stream((CAPTURES / name).read_bytes()) if isinstance(r, Message)]
    return tracker, tracker.feed_all(msgs)


@pytest.mark.parametrize(
    ("name", "disposition", "answered_by", "side", "ring", "talk"),
    [
        ("answered.ami", Disposition.ANSWERED, "1001", HangupSide.CALLEE, 1.0, 2.0),
        ("missed.ami", Disposition.MISSED, "", HangupSide.CALLER, 10.0, 0.0),
        ("busy.ami", Disposition.BUSY, "", HangupSide.CALLEE, 0.0, 0.0),
    ],
)
def test_capture_gives_one_exact_call_record(
    name: str, disposition: Disposition, answered_by: str, side: HangupSide, ring: float, talk: float
) -> None:
    tracker, events = replay(name)
    assert len(tracker.records) == 1
    rec = tracker.records[0]
    assert rec.direction is Direction.INBOUND
    assert rec.from_number == "+15551230000"
    assert rec.from_name == "Carrier"
    assert rec.to_number == "5551000"  # the DID as dialed; 7 digits is not a full US number
    assert rec.disposition is disposition
    assert rec.answered_by == answered_by
    assert rec.hangup_side is side
    assert rec.ring_seconds == pytest.approx(ring, abs=1.0)
    assert rec.talk_seconds == pytest.approx(talk, abs=1.0)
    assert tracker.live_calls == 0
    # The normalized events tell the same story, in order, one call id.
    call_events = [e for e in events if not isinstance(e, PresenceChanged | QueueMemberChanged)]
    assert isinstance(call_events[0], CallStarted)
    assert isinstance(call_events[-1], CallEnded)
    assert {getattr(e, "call_id", None) for e in call_events} == {rec.call_id}
    ended = call_events[-1]
    assert isinstance(ended, CallEnded)
    assert ended.disposition is disposition and ended.answered_by == answered_by
    assert [e.extension for e in call_events if isinstance(e, CallRinging)] == ["1001"]
    answered = [e for e in call_events if isinstance(e, CallAnswered)]
    assert [e.extension for e in answered] == (["1001"] if answered_by else [])
    # Durations are recoverable from the events' own times (what the call log stores).
    start = call_events[0].at
    assert start.tzinfo is not None
    if answered:
        assert (answered[0].at - start).total_seconds() == pytest.approx(ring, abs=1.0)
        assert (ended.at - answered[0].at).total_seconds() == pytest.approx(talk, abs=1.0)


def test_answered_capture_times_are_the_pbx_times() -> None:
    tracker, _ = replay("answered.ami")
    rec = tracker.records[0]
    assert rec.started_at == datetime(2026, 11, 22, 2, 4, 57, tzinfo=UTC)
    assert rec.ended_at == datetime(2026, 11, 22, 2, 5, 0, tzinfo=UTC)


def test_answered_capture_presence_of_1001() -> None:
    _, events = replay("answered.ami")
    presence = [(e.extension, e.presence) for e in events if isinstance(e, PresenceChanged)]
    # The trunk device and Queue:sales_avail are not people and are never reported.
    assert presence == [
        ("1001", Presence.RINGING),
        ("1001", Presence.ON_CALL),
        ("1001", Presence.AVAILABLE),
    ]


def test_answered_capture_queue_member_states_of_1001() -> None:
    # A real Asterisk 22: member PJSIP/1001 ("Alice") of queue sales rings, talks, is free again.
    _, events = replay("answered.ami")
    members = [
        (e.queue, e.extension, e.name, e.state, e.paused) for e in events if isinstance(e, QueueMemberChanged)
    ]
    assert members == [
        ("sales", "1001", "Alice", MemberState.RINGING, False),
        ("sales", "1001", "Alice", MemberState.ON_CALL, False),
        ("sales", "1001", "Alice", MemberState.AVAILABLE, False),
    ]


def test_bruteforce_capture_makes_no_calls() -> None:
    tracker, events = replay("bruteforce.ami")
    assert events == []
    assert len(tracker.records) == 0


def test_receive_time_is_used_when_events_have_no_timestamp() -> None:
    tracker = CallTracker(TrackerConfig(pbx="lab", trunk_patterns=("trunk",)))
    msgs = [r for r in parse_stream((CAPTURES / "answered.ami").read_bytes()) if isinstance(r, Message)]
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    from datetime import timedelta

    for i, msg in enumerate(msgs):
        tracker.feed(msg, received_at=t0 + timedelta(milliseconds=10 * i))
    rec = tracker.records[0]
    assert rec.started_at >= t0
    assert rec.ended_at <= t0 + timedelta(milliseconds=10 * len(msgs))


def test_timestamp_header_wins_over_receive_time() -> None:
    tracker = CallTracker(TrackerConfig(pbx="lab", trunk_patterns=("trunk",)))
    raw = (CAPTURES / "answered.ami").read_bytes()
    msgs = [r for r in parse_stream(raw) if isinstance(r, Message)]
    # Rebuild each event with a Timestamp header 1 s apart, as timestampevents=yes would send.
    stamped = []
    for i, msg in enumerate(msgs):
        pairs = list(msg.items())
        if msg.is_event:
            pairs.insert(2, ("Timestamp", f"{1800000000 + i}.250000"))
        stamped.append(Message.from_pairs(pairs))
    for msg in stamped:
        tracker.feed(msg, received_at=datetime(2030, 1, 1, tzinfo=UTC))
    rec = tracker.records[0]
    assert rec.started_at.year == 2027
    assert rec.started_at.microsecond == 250000
