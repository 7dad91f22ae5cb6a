from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from callbridge.domain.errors import InvalidEvent
from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    Direction,
    Disposition,
    HangupSide,
    Presence,
    PresenceChanged,
    event_from_dict,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_times_become_utc_and_naive_is_refused() -> None:
    plus2 = timezone(timedelta(hours=2))
    event = CallAnswered(
        pbx="p", call_id="c", at=datetime(2026, 11, 1, 14, 0, tzinfo=plus2), extension="1001"
    )
    assert event.at == T0 and event.at.tzinfo is UTC
    with pytest.raises(InvalidEvent):
        CallAnswered(pbx="p", call_id="c", at=datetime(2026, 11, 1, 12, 0), extension="1001")


def test_idempotency_key_is_stable_and_distinguishes() -> None:
    a = CallStarted(
        pbx="p",
        call_id="c1",
        at=T0,
        direction=Direction.INBOUND,
        from_number="+14155550100",
        to_number="1001",
    )
    b = CallStarted(
        pbx="p",
        call_id="c1",
        at=T0,
        direction=Direction.INBOUND,
        from_number="+14155550100",
        to_number="1001",
    )
    c = CallStarted(
        pbx="p",
        call_id="c2",
        at=T0,
        direction=Direction.INBOUND,
        from_number="+14155550100",
        to_number="1001",
    )
    assert a.idempotency_key == b.idempotency_key
    assert a.idempotency_key != c.idempotency_key
    ended = CallEnded(pbx="p", call_id="c1", at=T0, disposition=Disposition.MISSED)
    assert ended.idempotency_key != a.idempotency_key


@pytest.mark.parametrize(
    "event",
    [
        CallStarted(
            pbx="p",
            call_id="c",
            at=T0,
            direction=Direction.OUTBOUND,
            from_number="1001",
            to_number="+4930123",
        ),
        CallEnded(pbx="p", call_id="c", at=T0, disposition=Disposition.BUSY, hangup_side=HangupSide.CALLEE),
        PresenceChanged(pbx="p", at=T0, extension="1001", presence=Presence.ON_CALL),
    ],
)
def test_round_trip_through_dict(event: object) -> None:
    assert event_from_dict(event.to_dict()) == event  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"kind": "nope"},
        {"kind": "call_answered", "pbx": "p", "call_id": "c", "at": "yesterday", "extension": "1"},
        {"kind": "call_answered", "pbx": "p", "call_id": "c", "at": "2026-11-01T12:00:00+00:00"},
        {
            "kind": "call_ended",
            "pbx": "p",
            "call_id": "c",
            "at": "2026-11-01T12:00:00+00:00",
            "disposition": "weird",
        },
        {
            "kind": "call_answered",
            "pbx": "",
            "call_id": "c",
            "at": "2026-11-01T12:00:00+00:00",
            "extension": "1",
        },
        {
            "kind": "call_answered",
            "pbx": "p",
            "call_id": "c",
            "at": "2026-11-01T12:00:00+00:00",
            "extension": 5,
        },
    ],
)
def test_bad_dicts_raise_invalid_event(data: dict[str, object]) -> None:
    with pytest.raises(InvalidEvent):
        event_from_dict(data)
