"""Call outcomes from scripted Yeastar event sequences, order tolerance and idempotency."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callbridge.domain.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CallStarted,
    CallTransferred,
    Direction,
    Disposition,
    Event,
    HangupSide,
    Presence,
    PresenceChanged,
    QueueCompleted,
    QueueConnected,
    QueueEvent,
    QueueJoined,
    QueueLeft,
    QueueOutcome,
    RecordingAvailable,
    TransferKind,
)
from callbridge.pbx.yeastar.mapping import MapperSettings, YeastarMapper
from callbridge.pbx.yeastar.simulator import SimulatorConfig, YeastarSimulator
from callbridge.pbx.yeastar.webhooks import parse_envelope

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def script(name: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The envelopes a scripted call produces (the simulator need not listen for this)."""
    sim = YeastarSimulator(SimulatorConfig(step_delay=0))
    await sim.run_scenario(name, **kwargs)
    return [{"type": e["type"], "sn": "SN1", "msg": json.dumps(e["msg"])} for e in sim.emitted]


def replay(
    envelopes: list[dict[str, Any]],
    *,
    mapper: YeastarMapper | None = None,
    settle: bool = True,
    originated: tuple[str, str, str] | None = None,
) -> list[Event]:
    mapper = mapper or YeastarMapper("pbx1", clock=lambda: T0)
    out: list[Event] = []
    if originated:
        out += mapper.note_originated(*originated)
    for i, env in enumerate(envelopes):
        payload = parse_envelope(env).payload
        assert payload is not None
        out += mapper.feed(payload, now=T0 + timedelta(milliseconds=i))
    if settle:
        out += mapper.tick(T0 + timedelta(minutes=5))
    return out


def shape(events: list[Event]) -> list[dict[str, Any]]:
    """Events without their receipt time: what a call log stores."""
    out = []
    for e in events:
        d = e.to_dict()
        d.pop("at")
        out.append(d)
    return out


@dataclass(frozen=True)
class Truth:
    direction: Direction
    from_number: str
    to_number: str
    disposition: Disposition
    answered_by: str
    hangup_side: HangupSide | None = None


def ended(events: list[Event]) -> CallEnded:
    ends = [e for e in events if isinstance(e, CallEnded)]
    assert len(ends) == 1, shape(events)
    return ends[0]


def started(events: list[Event]) -> CallStarted:
    starts = [e for e in events if isinstance(e, CallStarted)]
    assert len(starts) == 1, shape(events)
    return starts[0]


CASES: list[tuple[str, dict[str, Any], Truth]] = [
    (
        "inbound_answered",
        {},
        Truth(Direction.INBOUND, "+14155550100", "6402", Disposition.ANSWERED, "2002", HangupSide.CALLER),
    ),
    (
        "inbound_answered",
        {"hangup_by": "agent", "invite": True},
        Truth(Direction.INBOUND, "+14155550100", "6402", Disposition.ANSWERED, "2002", HangupSide.CALLEE),
    ),
    (
        "inbound_missed",
        {},
        Truth(Direction.INBOUND, "+14155550100", "6402", Disposition.MISSED, "", HangupSide.CALLER),
    ),
    ("inbound_busy", {}, Truth(Direction.INBOUND, "+14155550100", "6402", Disposition.BUSY, "")),
    (
        "internal",
        {},
        Truth(Direction.INTERNAL, "2005", "2002", Disposition.ANSWERED, "2002", HangupSide.CALLEE),
    ),
    ("internal", {"answered": False}, Truth(Direction.INTERNAL, "2005", "2002", Disposition.MISSED, "")),
    ("inbound_transfer", {}, Truth(Direction.INBOUND, "+14155550100", "6402", Disposition.ANSWERED, "2002")),
    (
        "outbound",
        {},
        # The customer answered: nobody of ours is "answered by"; 1005 placed the call.
        Truth(Direction.OUTBOUND, "1005", "+14155550199", Disposition.ANSWERED, "", HangupSide.CALLEE),
    ),
    (
        "outbound",
        {"outcome": "busy"},
        Truth(Direction.OUTBOUND, "1005", "+14155550199", Disposition.BUSY, ""),
    ),
    (
        "outbound",
        {"outcome": "no_answer"},
        Truth(Direction.OUTBOUND, "1005", "+14155550199", Disposition.MISSED, "", HangupSide.CALLER),
    ),
    # The agent's own phone never picked up: the customer was never dialled. The CDR says
    # "NO ANSWER", which must not be logged as the customer not answering.
    (
        "outbound",
        {"outcome": "agent_no_answer"},
        Truth(Direction.OUTBOUND, "1005", "+14155550199", Disposition.FAILED, "", HangupSide.CALLER),
    ),
    (
        "outbound",
        {"outcome": "agent_no_answer", "cdr": False},
        Truth(Direction.OUTBOUND, "1005", "+14155550199", Disposition.FAILED, "", HangupSide.CALLER),
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "truth"), CASES)
async def test_scripted_call_outcomes(name: str, kwargs: dict[str, Any], truth: Truth) -> None:
    envelopes = await script(name, **kwargs)
    originated = None
    if name == "outbound":
        call_id = json.loads(envelopes[0]["msg"])["call_id"]
        originated = (call_id, "1005", "+14155550199")
    events = replay(envelopes, originated=originated)
    start, end = started(events), ended(events)
    assert (start.direction, start.from_number, start.to_number) == (
        truth.direction,
        truth.from_number,
        truth.to_number,
    )
    assert end.disposition is truth.disposition
    assert end.answered_by == truth.answered_by
    placer = start.from_number if truth.direction is not Direction.INBOUND else ""
    assert start.placed_by == placer
    if truth.hangup_side is not None:
        assert end.hangup_side is truth.hangup_side
    assert events[0] is start and events.index(end) > 0
    if truth.disposition is Disposition.ANSWERED:
        assert any(isinstance(e, CallAnswered) and e.extension == truth.answered_by for e in events)
        assert isinstance(events[-1], RecordingAvailable)


async def test_click_to_call_is_resolved_from_the_events_alone() -> None:
    """Without being told it originated the call, the mapper still finds the agent and customer."""
    events = replay(await script("outbound"))
    start = started(events)
    assert (start.direction, start.from_number, start.to_number) == (
        Direction.OUTBOUND,
        "1005",
        "+14155550199",
    )
    assert not any(isinstance(e, CallRinging) for e in events)  # the agent's own phone is not "ringing"
    agent_fail = replay(await script("outbound", outcome="agent_no_answer"))
    assert ended(agent_fail).disposition is Disposition.FAILED


async def test_inbound_emits_ringing_answered_and_transfer_in_order() -> None:
    events = replay(await script("inbound_transfer"))
    kinds = [(type(e).__name__, getattr(e, "extension", getattr(e, "to", ""))) for e in events]
    assert kinds == [
        ("CallStarted", ""),
        ("CallRinging", "2002"),
        ("CallAnswered", "2002"),
        ("CallTransferred", "2005"),
        ("CallRinging", "2005"),
        ("CallAnswered", "2005"),
        ("CallEnded", ""),
        ("RecordingAvailable", ""),
    ]
    transfer = next(e for e in events if isinstance(e, CallTransferred))
    assert transfer.transfer is TransferKind.BLIND and transfer.from_extension == "2002"


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("inbound_answered", {}),
        ("inbound_missed", {}),
        ("outbound", {}),
        ("outbound", {"outcome": "busy"}),
        ("outbound", {"outcome": "agent_no_answer"}),
    ],
)
async def test_cdr_before_or_after_the_last_state_change_gives_the_same_call(
    name: str, kwargs: dict[str, Any]
) -> None:
    after = shape(replay(await script(name, **kwargs, cdr_first=False)))
    before = shape(replay(await script(name, **kwargs, cdr_first=True)))
    for events in (after, before):
        for e in events:
            e.pop("call_id")
            if e["kind"] == "recording_available":
                e.pop("recording")  # contains the call id
    assert before == after
    assert any(e["kind"] == "call_ended" for e in before)


async def test_cdr_that_overtakes_the_last_bye_waits_for_it() -> None:
    envelopes = await script("inbound_answered", cdr_first=True)
    mapper = YeastarMapper("pbx1", clock=lambda: T0)
    out = replay(envelopes[:-1], mapper=mapper, settle=False)  # CDR in, last BYE not yet
    assert not any(isinstance(e, CallEnded) for e in out)
    out += replay(envelopes[-1:], mapper=mapper, settle=False)
    assert ended(out).hangup_side is HangupSide.CALLER


async def test_duplicates_and_replays_change_nothing() -> None:
    envelopes = await script("inbound_answered")
    once = shape(replay(envelopes))
    doubled = [env for env in envelopes for _ in (0, 1)]
    twice = shape(replay(doubled))
    assert once == twice
    mapper = YeastarMapper("pbx1", clock=lambda: T0)
    replay(envelopes, mapper=mapper)
    assert replay(envelopes, mapper=mapper) == []  # the whole call again, after its end


async def test_call_without_cdr_ends_after_the_wait_from_member_states() -> None:
    envelopes = [e for e in await script("inbound_answered") if e["type"] != 30012]
    mapper = YeastarMapper("pbx1", clock=lambda: T0)
    out = replay(envelopes, mapper=mapper, settle=False)
    assert not any(isinstance(e, CallEnded) for e in out)
    out += mapper.tick(T0 + timedelta(seconds=30))
    end = ended(out)
    assert end.disposition is Disposition.ANSWERED and end.answered_by == "2002"


async def test_cdr_only_subscription_still_logs_the_call() -> None:
    envelopes = [e for e in await script("inbound_answered") if e["type"] == 30012]
    events = replay(envelopes)
    start, end = started(events), ended(events)
    assert start.direction is Direction.INBOUND and start.from_number == "+14155550100"
    assert end.disposition is Disposition.ANSWERED and end.answered_by == "2002"


def test_presence_events_map_and_deduplicate() -> None:
    mapper = YeastarMapper("pbx1", clock=lambda: T0)

    def feed(event_type: int, **msg: str) -> list[Event]:
        payload = parse_envelope({"type": event_type, "sn": "S", "msg": json.dumps(msg)}).payload
        assert payload is not None
        return mapper.feed(payload)

    [ringing] = feed(30008, extension="2002", status="Ringing")
    assert isinstance(ringing, PresenceChanged) and ringing.presence is Presence.RINGING
    assert feed(30008, extension="2002", status="Ringing") == []
    [busy] = feed(30008, extension="2002", status="Busy")
    assert isinstance(busy, PresenceChanged) and busy.presence is Presence.ON_CALL
    [idle] = feed(30008, extension="2002", status="Idle")
    assert isinstance(idle, PresenceChanged) and idle.presence is Presence.AVAILABLE
    [dnd] = feed(30009, extension="2002", status="do_not_disturb")
    assert isinstance(dnd, PresenceChanged) and dnd.presence is Presence.DO_NOT_DISTURB
    [offline] = feed(30007, extension="2002", kind="Sip", status="Unregistered", registered_ip="")
    assert isinstance(offline, PresenceChanged) and offline.presence is Presence.OFFLINE


async def test_a_cdr_after_the_call_was_closed_still_brings_its_recording_once() -> None:
    """The PBX's CDR came too late: the call was closed without it. When it does come, only the
    recording is new; a second copy, or a late state report, changes nothing. The mapper keeps
    at most ``remember_ended`` ended calls, as ids, not whole calls."""
    envelopes = await script("inbound_answered")
    cdr = next(e for e in envelopes if e["type"] == 30012)
    without_cdr = [e for e in envelopes if e is not cdr]
    mapper = YeastarMapper("pbx1", MapperSettings(remember_ended=3), clock=lambda: T0)
    events = replay(without_cdr, mapper=mapper)  # settles: closed after the CDR wait
    assert ended(events).disposition is Disposition.ANSWERED
    assert not any(isinstance(e, RecordingAvailable) for e in events)
    late = parse_envelope(cdr).payload
    assert late is not None
    [recording] = mapper.feed(late, now=T0 + timedelta(minutes=6))
    assert isinstance(recording, RecordingAvailable) and recording.recording
    assert mapper.feed(late, now=T0 + timedelta(minutes=7)) == []
    last_report = parse_envelope(without_cdr[-1]).payload
    assert last_report is not None and mapper.feed(last_report) == []
    missed = await script("inbound_missed")
    missed_id = json.loads(missed[0]["msg"])["call_id"]
    for n in range(5):  # more ended calls than it remembers
        replay([{**e, "msg": e["msg"].replace(missed_id, f"{missed_id}{n}")} for e in missed], mapper=mapper)
    assert len(mapper._ended) == 3
    assert all(isinstance(seen, bool) for seen in mapper._ended.values())


def test_cdr_times_are_read_in_the_pbx_time_zone() -> None:
    from callbridge.pbx.yeastar.payloads import CallReport, CdrReport, Member, MemberKind, MemberStatus

    now = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
    mapper = YeastarMapper("pbx1", MapperSettings(pbx_timezone="Europe/Berlin"), clock=lambda: now)
    ext = Member(MemberKind.EXTENSION, "PJSIP/2005-1", MemberStatus.ALERT, number="2005")
    callee = Member(MemberKind.EXTENSION, "PJSIP/2002-2", MemberStatus.RING, number="2002")
    mapper.feed(CallReport(30011, "9.1", (ext, callee)), now)
    bye = (
        Member(MemberKind.EXTENSION, "PJSIP/2005-1", MemberStatus.BYE, number="2005"),
        Member(MemberKind.EXTENSION, "PJSIP/2002-2", MemberStatus.BYE, number="2002"),
    )
    mapper.feed(CallReport(30011, "9.1", bye), now)
    cdr = CdrReport("9.1", "2025-07-01 13:40:00", "2005", "2002", 30, 0, "NO ANSWER", "internal")
    (end,) = [e for e in mapper.feed(cdr, now) if isinstance(e, CallEnded)]
    # 13:40 in Berlin (summer time) is 11:40 UTC; unanswered: no answer time.
    assert end.started_at == datetime(2025, 7, 1, 11, 40, tzinfo=UTC)
    assert end.at == datetime(2025, 7, 1, 11, 40, 30, tzinfo=UTC)
    assert end.answered_at is None and end.disposition is Disposition.MISSED


# ------------------------------------------------------------------------------ queues

QUEUES = MapperSettings(queues=(("6400", "sales"),))


def queue_events(events: list[Event]) -> list[QueueEvent]:
    return [e for e in events if isinstance(e, QueueEvent)]


def report(call_id: str, *members: tuple[str, str, str, str]) -> dict[str, Any]:
    """A 30011 with members (kind, number or caller, status, call_path); channels per number."""
    wire = []
    for kind, number, status, path in members:
        if kind == "extension":
            body: dict[str, Any] = {"number": number, "channel_id": f"PJSIP/{number}-00000001"}
        else:
            body = {
                "from": number,
                "to": "6402",
                "trunk_name": "stc",
                "channel_id": "PJSIP/trunk-stc-endpoint-00000001",
            }
        body |= {"member_status": status, "call_path": path}
        wire.append({kind: body})
    return {"type": 30011, "sn": "SN1", "msg": json.dumps({"call_id": call_id, "members": wire})}


def fed(mapper: YeastarMapper, timed: list[tuple[float, dict[str, Any]]], settle_at: float) -> list[Event]:
    out: list[Event] = []
    for seconds, env in timed:
        payload = parse_envelope(env).payload
        assert payload is not None
        out += mapper.feed(payload, now=T0 + timedelta(seconds=seconds))
    return out + mapper.tick(T0 + timedelta(seconds=settle_at))


async def test_a_queue_call_gives_the_same_queue_events_in_any_order_and_with_duplicates() -> None:
    envelopes = await script("inbound_queue", queue="6400", wait=12, talk=42)
    straight = queue_events(replay(envelopes, mapper=YeastarMapper("pbx1", QUEUES, clock=lambda: T0)))
    kinds = [(type(e).__name__, getattr(e, "extension", "")) for e in straight]
    assert kinds[0] == ("QueueJoined", "") and kinds[-2:] == [
        ("QueueConnected", "2002"),
        ("QueueCompleted", "2002"),
    ]
    assert sorted(kinds[1:3]) == [("QueueAgentRang", "2002"), ("QueueAgentRang", "2005")]
    joined, connected, completed = straight[0], straight[3], straight[4]
    assert isinstance(joined, QueueJoined) and joined.queue == "sales" and not joined.rings_reported
    assert isinstance(connected, QueueConnected) and connected.wait_seconds == 12
    assert isinstance(completed, QueueCompleted) and completed.talk_seconds == 42
    assert connected.at - joined.at == timedelta(seconds=12)
    # The CDR first, the last BYE after it, everything twice: the same queue events.
    cdr = [e for e in envelopes if e["type"] == 30012]
    rest = [e for e in envelopes if e["type"] != 30012]
    shuffled = rest[:2] + cdr + rest[2:] + rest[:2]
    again = queue_events(replay(shuffled, mapper=YeastarMapper("pbx1", QUEUES, clock=lambda: T0)))
    assert {e.idempotency_key for e in again} == {e.idempotency_key for e in straight}


async def test_an_abandoned_queue_call_and_a_number_that_is_not_a_queue() -> None:
    envelopes = await script("inbound_queue", queue="6400", outcome="abandoned", wait=30)
    events = queue_events(replay(envelopes, mapper=YeastarMapper("pbx1", QUEUES, clock=lambda: T0)))
    left = events[-1]
    assert isinstance(left, QueueLeft)
    assert (left.queue, left.outcome, left.wait_seconds) == ("sales", QueueOutcome.ABANDONED, 30)
    assert not any(isinstance(e, QueueConnected) for e in events)
    # Without the number listed (an IVR, a ring group): no queue at all.
    assert queue_events(replay(envelopes)) == []
    ivr = await script("inbound_queue", queue="6200", wait=5)
    assert queue_events(replay(ivr, mapper=YeastarMapper("pbx1", QUEUES, clock=lambda: T0))) == []


def test_without_a_cdr_the_wait_and_talk_come_from_when_the_reports_came() -> None:
    mapper = YeastarMapper("pbx1", QUEUES, clock=lambda: T0)
    events = fed(
        mapper,
        [
            (0, report("1.1", ("inbound", "4155550100", "ALERT", ""))),
            (
                2,
                report(
                    "1.1", ("inbound", "4155550100", "ALERT", "6400"), ("extension", "2002", "RING", "6400")
                ),
            ),
            (
                14,
                report(
                    "1.1",
                    ("inbound", "4155550100", "ANSWERED", "6400"),
                    ("extension", "2002", "ANSWER", "6400"),
                ),
            ),
            (
                50,
                report("1.1", ("inbound", "4155550100", "BYE", "6400"), ("extension", "2002", "BYE", "6400")),
            ),
        ],
        settle_at=80,  # no CDR came: the call ends from its members' states
    )
    joined, _rang, connected, completed = queue_events(events)
    assert joined.at == T0 + timedelta(seconds=2)  # the queue's number first seen
    assert isinstance(connected, QueueConnected) and connected.wait_seconds == 12
    assert isinstance(completed, QueueCompleted) and completed.talk_seconds == 36
    ended = next(e for e in events if isinstance(e, CallEnded))
    assert all(e.at <= ended.at for e in queue_events(events))  # the call log takes them all


def test_answered_elsewhere_after_the_queue_is_left_not_answered_nor_abandoned() -> None:
    """A failover (a queue timeout or another rule: Yeastar does not say which) to an
    extension outside the queue: the caller *left* the queue."""
    mapper = YeastarMapper("pbx1", QUEUES, clock=lambda: T0)
    events = fed(
        mapper,
        [
            (
                0,
                report(
                    "1.2", ("inbound", "4155550100", "ALERT", "6400"), ("extension", "2002", "RING", "6400")
                ),
            ),
            (30, report("1.2", ("extension", "2002", "BYE", "6400"), ("extension", "2009", "RING", ""))),
            (
                35,
                report(
                    "1.2", ("inbound", "4155550100", "ANSWERED", "6400"), ("extension", "2009", "ANSWER", "")
                ),
            ),
            (60, report("1.2", ("inbound", "4155550100", "BYE", "6400"), ("extension", "2009", "BYE", ""))),
        ],
        settle_at=90,
    )
    left = queue_events(events)[-1]
    assert isinstance(left, QueueLeft)
    assert (left.outcome, left.wait_seconds) == (QueueOutcome.LEFT, 35)
    ended = next(e for e in events if isinstance(e, CallEnded))
    assert ended.answered_by == "2009"
