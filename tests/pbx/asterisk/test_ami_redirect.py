"""A call moved by an AMI ``Redirect`` is a transfer, though Asterisk sends no transfer event.

The simulator's scripted calls speak AMI over real TCP; the raw bytes a client received are
replayed through codec + tracker, and the call record is folded from the tracker's events.
"""

from __future__ import annotations

import asyncio

import pytest

from callbridge.domain.calls import CallRecord
from callbridge.domain.events import CallEvent, CallTransferred, Event, TransferKind
from callbridge.pbx.asterisk.codec import Message, parse_stream
from callbridge.pbx.asterisk.simulator import AmiSimulator
from callbridge.pbx.asterisk.tracker import CallTracker, TrackerConfig


async def captured(cel: bool, scenario: str, **kwargs: object) -> bytes:
    """What an AMI client logged in to the simulator received while ``scenario`` ran."""
    async with AmiSimulator(secret="s3cret", cel=cel, timestamps=True) as sim:
        reader, writer = await asyncio.open_connection(sim.host, sim.port)
        writer.write(b"Action: Login\r\nUsername: hub\r\nSecret: s3cret\r\n\r\n")
        await writer.drain()
        got = b""
        while b"FullyBooted" not in got:
            got += await reader.read(65536)
        linkedid = await sim.place_call(scenario, **kwargs)  # type: ignore[arg-type]
        writer.write(b"Action: Logoff\r\n\r\n")
        await writer.drain()
        while b"Goodbye" not in got:
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
        writer.close()
        assert linkedid.encode() in got
        return got


def replay(raw: bytes) -> list[Event]:
    tracker = CallTracker(TrackerConfig(pbx="lab", trunk_patterns=("trunk",), default_region="US"))
    events = tracker.feed_all(m for m in parse_stream(raw) if isinstance(m, Message))
    assert tracker.live_calls == 0
    return events


def record(events: list[Event]) -> CallRecord:
    calls = [e for e in events if isinstance(e, CallEvent)]
    assert len({e.call_id for e in calls}) == 1, "one conversation, one call"
    return CallRecord.fold("lab", calls[0].call_id, calls)


@pytest.mark.parametrize("cel", [False, True])
async def test_a_redirected_call_is_a_transfer_to_the_new_extension(cel: bool) -> None:
    raw = await captured(cel, "redirected", caller="+14155550105", extension="1005", target="1006", talk=1.0)
    # What Asterisk really sends for a Redirect: no transfer event, the caller leaves its bridge
    # first, the extension left behind is hung up, and the caller dials anew.
    assert b"Transfer" not in raw
    assert raw.index(b"Channel: PJSIP/trunk") < raw.index(b"Event: Hangup")
    events = replay(raw)
    transfers = [e for e in events if isinstance(e, CallTransferred)]
    assert [(t.transfer, t.from_extension, t.to) for t in transfers] == [(TransferKind.BLIND, "1005", "1006")]
    call = record(events)
    assert call.transferred_to == "1006"
    assert call.answered_by_extension == "1005"
    assert "1006" in call.participants
    # Talk time counts both parts (1 s with 1005, 1 s with 1006).
    assert 2 <= call.talk_seconds <= 3, call.summary()


async def test_a_blind_transfer_event_is_not_counted_twice() -> None:
    raw = await captured(False, "blind_transfer", caller="+14155550105", extension="1005", target="1006")
    assert b"BlindTransfer" in raw
    transfers = [e for e in replay(raw) if isinstance(e, CallTransferred)]
    assert [(t.from_extension, t.to) for t in transfers] == [("1005", "1006")]


@pytest.mark.parametrize("scenario", ["inbound_answered", "outbound_answered", "internal_answered"])
async def test_an_ordinary_call_has_no_transfer(scenario: str) -> None:
    raw = await captured(True, scenario, number="1002" if scenario.startswith("internal") else "+14155550100")
    call = record(replay(raw))
    assert call.transferred_to == ""
