"""The call record state machine: outcomes, idempotency, order tolerance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.domain.calls import CallRecord
from callbridge.domain.errors import InvalidEvent
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRinging,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    HangupSide,
    Presence,
    PresenceChanged,
    RecordingAvailable,
    TransferKind,
)

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
PBX = "main"
CALL = "1700000000.1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def answered_inbound() -> list[CallEvent]:
    return [
        CallStarted(
            pbx=PBX,
            call_id=CALL,
            at=at(0),
            direction=Direction.INBOUND,
            from_number="+14155550100",
            to_number="+14155550999",
            from_name="Ada",
        ),
        CallRinging(pbx=PBX, call_id=CALL, at=at(1), extension="1001"),
        CallRinging(pbx=PBX, call_id=CALL, at=at(1), extension="1002"),
        CallAnswered(pbx=PBX, call_id=CALL, at=at(7), extension="1002"),
        CallTransferred(
            pbx=PBX, call_id=CALL, at=at(30), transfer=TransferKind.BLIND, from_extension="1002", to="1003"
        ),
        RecordingAvailable(pbx=PBX, call_id=CALL, at=at(66), recording="rec/1700000000.1.wav"),
        CallEnded(
            pbx=PBX,
            call_id=CALL,
            at=at(65),
            disposition=Disposition.ANSWERED,
            hangup_side=HangupSide.CALLER,
            answered_by="1002",
        ),
    ]


def test_answered_inbound_call_in_order() -> None:
    record = CallRecord.fold(PBX, CALL, answered_inbound())
    assert record.direction is Direction.INBOUND
    assert record.from_number == "+14155550100"
    assert record.to_number == "+14155550999"
    assert record.from_name == "Ada"
    assert record.external_number == "+14155550100"
    assert record.disposition is Disposition.ANSWERED
    assert record.answered_by_extension == "1002"
    assert record.started_at == at(0)
    assert record.answered_at == at(7)
    assert record.ended_at == at(65)
    assert record.ring_seconds == 7
    assert record.talk_seconds == 58
    assert record.transferred_to == "1003"
    assert record.recording == "rec/1700000000.1.wav"
    assert record.hangup_side is HangupSide.CALLER
    assert record.rang_extensions == ("1001", "1002")
    assert record.is_complete
    assert set(record.participants) == {"1001", "1002", "1003"}


def test_same_event_twice_changes_nothing() -> None:
    events = answered_inbound()
    record = CallRecord.fold(PBX, CALL, events)
    again = record.apply(events[3])
    assert again is record
    assert CallRecord.fold(PBX, CALL, events + events) == record


def test_end_before_answer_still_yields_answered_record() -> None:
    events = answered_inbound()
    started, ring1, ring2, answered, transferred, recording, ended = events
    record = CallRecord.fold(PBX, CALL, [ended, started, ring1, answered, ring2, recording, transferred])
    assert record.summary() == CallRecord.fold(PBX, CALL, events).summary()
    assert record.talk_seconds == 58


def test_end_alone_knows_who_answered() -> None:
    ended = CallEnded(pbx=PBX, call_id=CALL, at=at(40), disposition=Disposition.ANSWERED, answered_by="1005")
    record = CallRecord.new(PBX, CALL).apply(ended)
    assert record.answered_by_extension == "1005"
    assert record.direction is None
    assert record.external_number == ""
    assert record.talk_seconds == 0  # no answer time known: no guess


def test_missed_call_has_ring_time_and_no_talk() -> None:
    start = CallStarted(
        pbx=PBX,
        call_id=CALL,
        at=at(0),
        direction=Direction.INBOUND,
        from_number="+442071838750",
        to_number="+14155550999",
    )
    ring = CallRinging(pbx=PBX, call_id=CALL, at=at(0.5), extension="1001")
    end = CallEnded(
        pbx=PBX, call_id=CALL, at=at(21.6), disposition=Disposition.MISSED, hangup_side=HangupSide.CALLER
    )
    record = CallRecord.fold(PBX, CALL, [ring, end, start])
    assert record.disposition is Disposition.MISSED
    assert record.ring_seconds == 22
    assert record.talk_seconds == 0
    assert record.answered_by_extension == ""
    assert record.answered_at is None


def test_voicemail_is_not_a_conversation_even_if_the_line_was_answered() -> None:
    start = CallStarted(
        pbx=PBX, call_id=CALL, at=at(0), direction=Direction.INBOUND, from_number="+1", to_number="1001"
    )
    answered = CallAnswered(pbx=PBX, call_id=CALL, at=at(20), extension="1001")
    end = CallEnded(pbx=PBX, call_id=CALL, at=at(50), disposition=Disposition.VOICEMAIL)
    record = CallRecord.fold(PBX, CALL, [start, answered, end])
    assert record.disposition is Disposition.VOICEMAIL
    assert record.talk_seconds == 0
    assert record.answered_by_extension == ""
    assert record.ring_seconds == 50


def test_outbound_external_party_is_the_callee() -> None:
    start = CallStarted(
        pbx=PBX,
        call_id=CALL,
        at=at(0),
        direction=Direction.OUTBOUND,
        from_number="1001",
        to_number="+4930123456",
    )
    record = CallRecord.new(PBX, CALL).apply(start)
    assert record.external_number == "+4930123456"
    assert record.internal_extension == "1001"
    assert record.disposition is None
    assert not record.is_complete
    assert record.participants == ("1001",)


def test_internal_call_has_no_external_party() -> None:
    start = CallStarted(
        pbx=PBX, call_id=CALL, at=at(0), direction=Direction.INTERNAL, from_number="1001", to_number="1002"
    )
    record = CallRecord.new(PBX, CALL).apply(start)
    assert record.external_number == ""
    assert record.participants == ("1001", "1002")


def test_in_progress_answered_call_shows_answer_but_no_talk_yet() -> None:
    events = answered_inbound()[:4]
    record = CallRecord.fold(PBX, CALL, events)
    assert record.answered_by_extension == "1002"
    assert record.answered_at == at(7)
    assert record.talk_seconds == 0
    assert record.ended_at is None


def test_clock_skew_never_gives_negative_durations() -> None:
    answer = CallAnswered(pbx=PBX, call_id=CALL, at=at(10), extension="1001")
    end = CallEnded(pbx=PBX, call_id=CALL, at=at(9), disposition=Disposition.ANSWERED)
    record = CallRecord.fold(PBX, CALL, [answer, end])
    assert record.talk_seconds == 0
    assert record.ring_seconds == 1  # the call began with its earliest event (the end, at 9 s)


def test_later_end_report_wins() -> None:
    first = CallEnded(pbx=PBX, call_id=CALL, at=at(10), disposition=Disposition.MISSED)
    corrected = CallEnded(pbx=PBX, call_id=CALL, at=at(11), disposition=Disposition.VOICEMAIL)
    assert CallRecord.fold(PBX, CALL, [corrected, first]).disposition is Disposition.VOICEMAIL
    assert CallRecord.fold(PBX, CALL, [first, corrected]).disposition is Disposition.VOICEMAIL


def test_events_of_another_call_are_refused() -> None:
    other = CallRinging(pbx=PBX, call_id="other", at=at(1), extension="1001")
    with pytest.raises(InvalidEvent):
        CallRecord.new(PBX, CALL).apply(other)
    other_pbx = CallRinging(pbx="branch", call_id=CALL, at=at(1), extension="1001")
    with pytest.raises(InvalidEvent):
        CallRecord.new(PBX, CALL).apply(other_pbx)


def test_presence_is_not_a_call_event() -> None:
    presence = PresenceChanged(pbx=PBX, at=at(0), extension="1001", presence=Presence.AVAILABLE)
    with pytest.raises(InvalidEvent):
        CallRecord.new(PBX, CALL).apply(presence)


def test_several_transfers_keep_their_order() -> None:
    t1 = CallTransferred(
        pbx=PBX, call_id=CALL, at=at(5), transfer=TransferKind.ATTENDED, from_extension="1001", to="1002"
    )
    t2 = CallTransferred(
        pbx=PBX, call_id=CALL, at=at(9), transfer=TransferKind.BLIND, from_extension="1002", to="+14155550123"
    )
    record = CallRecord.fold(PBX, CALL, [t2, t1])
    assert [t.to for t in record.transfer_list] == ["1002", "+14155550123"]
    assert record.transferred_to == "+14155550123"
    assert "+14155550123" not in record.participants


# -- property-based: any order, any duplicates → the same record -------------------------------

_EXT = st.sampled_from(["1001", "1002", "1003", "200"])
_SECONDS = st.integers(min_value=0, max_value=600)


@st.composite
def call_events(draw: st.DrawFn) -> list[CallEvent]:
    events: list[CallEvent] = []
    if draw(st.booleans()):
        events.append(
            CallStarted(
                pbx=PBX,
                call_id=CALL,
                at=at(draw(_SECONDS)),
                direction=draw(st.sampled_from(list(Direction))),
                from_number=draw(st.sampled_from(["+14155550100", "1001"])),
                to_number=draw(st.sampled_from(["+4930123456", "1002"])),
            )
        )
    for _ in range(draw(st.integers(0, 3))):
        events.append(CallRinging(pbx=PBX, call_id=CALL, at=at(draw(_SECONDS)), extension=draw(_EXT)))
    for _ in range(draw(st.integers(0, 2))):
        events.append(CallAnswered(pbx=PBX, call_id=CALL, at=at(draw(_SECONDS)), extension=draw(_EXT)))
    for _ in range(draw(st.integers(0, 2))):
        events.append(
            CallTransferred(
                pbx=PBX,
                call_id=CALL,
                at=at(draw(_SECONDS)),
                transfer=draw(st.sampled_from(list(TransferKind))),
                from_extension=draw(_EXT),
                to=draw(_EXT),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        events.append(
            CallEnded(
                pbx=PBX,
                call_id=CALL,
                at=at(draw(_SECONDS)),
                disposition=draw(st.sampled_from(list(Disposition))),
                hangup_side=draw(st.sampled_from(list(HangupSide))),
                answered_by=draw(st.sampled_from(["", "1001", "1002"])),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        events.append(
            RecordingAvailable(
                pbx=PBX, call_id=CALL, at=at(draw(_SECONDS)), recording=f"r{draw(st.integers(0, 3))}"
            )
        )
    return events


@settings(max_examples=300, deadline=None)
@given(events=call_events(), data=st.data())
def test_any_order_and_duplicates_yield_the_same_record(events: list[CallEvent], data: st.DataObject) -> None:
    reference = CallRecord.fold(PBX, CALL, events)
    duplicated = events + data.draw(st.lists(st.sampled_from(events), max_size=5)) if events else []
    shuffled = data.draw(st.permutations(duplicated))
    record = CallRecord.fold(PBX, CALL, shuffled)
    assert record == reference
    assert record.summary() == reference.summary()


@settings(max_examples=200, deadline=None)
@given(events=call_events())
def test_invariants_hold_for_any_event_set(events: list[CallEvent]) -> None:
    record = CallRecord.fold(PBX, CALL, events)
    assert record.ring_seconds >= 0
    assert record.talk_seconds >= 0
    if record.disposition is not Disposition.ANSWERED:
        assert record.talk_seconds == 0
    if record.disposition not in (None, Disposition.ANSWERED):
        assert record.answered_by_extension == ""
    if record.started_at is not None:
        assert all(record.started_at <= e.at for e in events)
    assert len(record.applied) == len({e.idempotency_key for e in events})


def outbound_answered(answerer: str) -> list[CallEvent]:
    return [
        CallStarted(
            pbx=PBX,
            call_id=CALL,
            at=at(0),
            direction=Direction.OUTBOUND,
            from_number="1001",
            to_number="+14155550100",
            placed_by="1001",
        ),
        CallAnswered(pbx=PBX, call_id=CALL, at=at(4), extension=answerer),
        CallEnded(pbx=PBX, call_id=CALL, at=at(64), disposition=Disposition.ANSWERED, answered_by=answerer),
    ]


@pytest.mark.parametrize("answerer", ["", "1001"])  # "1001": what drivers said before placed_by
def test_outbound_call_is_answered_by_the_outside_party_and_placed_by_ours(answerer: str) -> None:
    summary = CallRecord.fold(PBX, CALL, outbound_answered(answerer)).summary()
    assert summary.answered_by_extension == ""
    assert summary.placed_by_extension == "1001"
    assert summary.answered_at == at(4)
    assert summary.talk_seconds == 60
    assert "1001" in summary.participants


def test_placed_by_falls_back_to_an_extension_caller_for_old_events() -> None:
    started = CallStarted(
        pbx=PBX,
        call_id=CALL,
        at=at(0),
        direction=Direction.OUTBOUND,
        from_number="1001",
        to_number="+14155550100",
    )
    assert CallRecord.fold(PBX, CALL, [started]).placed_by_extension == "1001"
    trunk_caller = CallStarted(
        pbx=PBX,
        call_id=CALL,
        at=at(0),
        direction=Direction.OUTBOUND,
        from_number="+14155550999",
        to_number="+14155550100",
    )
    assert CallRecord.fold(PBX, CALL, [trunk_caller]).placed_by_extension == ""
    inbound = answered_inbound()
    assert CallRecord.fold(PBX, CALL, inbound).placed_by_extension == ""


def test_an_event_without_new_fields_keeps_its_old_json_and_key() -> None:
    started = outbound_answered("")[0]
    assert "placed_by" in started.to_dict()
    bare = CallStarted(
        pbx=PBX,
        call_id=CALL,
        at=at(0),
        direction=Direction.INBOUND,
        from_number="+14155550100",
        to_number="1001",
    )
    assert "placed_by" not in bare.to_dict()
    ended = CallEnded(pbx=PBX, call_id=CALL, at=at(9), disposition=Disposition.MISSED)
    assert set(ended.to_dict()) == {
        "kind",
        "pbx",
        "at",
        "call_id",
        "disposition",
        "hangup_side",
        "answered_by",
    }


def test_the_pbx_measured_times_beat_arrival_times() -> None:
    # Every event arrived in one burst two minutes after the call; the end carries the CDR's times.
    burst = at(180)
    events: list[CallEvent] = [
        CallStarted(
            pbx=PBX,
            call_id=CALL,
            at=burst,
            direction=Direction.INBOUND,
            from_number="+14155550100",
            to_number="1001",
        ),
        CallRinging(pbx=PBX, call_id=CALL, at=burst, extension="1001"),
        CallAnswered(pbx=PBX, call_id=CALL, at=burst, extension="1001"),
        CallEnded(
            pbx=PBX,
            call_id=CALL,
            at=at(75),
            disposition=Disposition.ANSWERED,
            answered_by="1001",
            started_at=at(0),
            answered_at=at(12),
        ),
    ]
    record = CallRecord.fold(PBX, CALL, events)
    assert (record.started_at, record.answered_at, record.ended_at) == (at(0), at(12), at(75))
    assert (record.ring_seconds, record.talk_seconds) == (12, 63)
    assert record.answered_by_extension == "1001"
    again = CallRecord.fold(PBX, CALL, reversed(events))
    assert again.summary() == record.summary()


def test_measured_times_survive_the_round_trip_through_json() -> None:
    from callbridge.domain.events import event_from_dict

    ended = CallEnded(
        pbx=PBX,
        call_id=CALL,
        at=at(75),
        disposition=Disposition.ANSWERED,
        started_at=at(0),
        answered_at=at(12),
    )
    rebuilt = event_from_dict(ended.to_dict())
    assert rebuilt == ended
    assert rebuilt.idempotency_key == ended.idempotency_key
