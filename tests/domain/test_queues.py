"""Queue visits from a PBX that does not report unanswered rings (Yeastar): what is known is
counted, what is not is marked unknown, and what Asterisk stored before stays as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callbridge.domain.events import (
    QueueAgentMissed,
    QueueAgentRang,
    QueueCompleted,
    QueueConnected,
    QueueEvent,
    QueueJoined,
    QueueLeft,
    QueueOutcome,
    event_from_dict,
)
from callbridge.domain.queues import (
    QueueSettings,
    fold_visits,
    queue_figures,
    visits_from_json,
    visits_to_json,
)

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_an_asterisk_join_keeps_its_json_and_key_and_a_yeastar_join_says_it() -> None:
    asterisk = QueueJoined(pbx="office", at=T0, call_id="1.1", queue="sales", position=1)
    assert "rings_reported" not in asterisk.to_dict()  # the JSON (and key) stored before
    yeastar = QueueJoined(pbx="cloud", at=T0, call_id="1.1", queue="sales", rings_reported=False)
    assert yeastar.to_dict()["rings_reported"] is False
    assert event_from_dict(yeastar.to_dict()) == yeastar
    assert event_from_dict(asterisk.to_dict()) == asterisk


def test_visits_say_when_rings_were_not_reported_and_old_json_reads_as_reported() -> None:
    visits = fold_visits(
        [
            QueueJoined(pbx="cloud", at=T0, call_id="1", queue="sales", rings_reported=False),
            QueueAgentRang(pbx="cloud", at=_at(1), call_id="1", queue="sales", extension="2002"),
            QueueConnected(
                pbx="cloud", at=_at(12), call_id="1", queue="sales", extension="2002", wait_seconds=12
            ),
        ]
    )
    assert len(visits) == 1 and not visits[0].rings_reported
    assert visits_from_json(visits_to_json(visits)) == visits
    old = (
        '[{"queue":"sales","entered_at":"2026-12-06T09:00:00+00:00","outcome":"abandoned","wait_seconds":9}]'
    )
    assert visits_from_json(old)[0].rings_reported


def _visit(call: str, *, rings_reported: bool, answered_by: str = "", wait: int = 10) -> list[QueueEvent]:
    pbx = "cloud" if not rings_reported else "office"
    events: list[QueueEvent] = [
        QueueJoined(pbx=pbx, at=T0, call_id=call, queue="sales", rings_reported=rings_reported),
        QueueAgentRang(pbx=pbx, at=_at(1), call_id=call, queue="sales", extension="2002"),
    ]
    if answered_by:
        events += [
            QueueConnected(
                pbx=pbx, at=_at(wait), call_id=call, queue="sales", extension=answered_by, wait_seconds=wait
            ),
            QueueCompleted(
                pbx=pbx,
                at=_at(wait + 30),
                call_id=call,
                queue="sales",
                extension=answered_by,
                wait_seconds=wait,
                talk_seconds=30,
            ),
        ]
    else:
        events.append(
            QueueLeft(
                pbx=pbx,
                at=_at(wait),
                call_id=call,
                queue="sales",
                outcome=QueueOutcome.ABANDONED,
                wait_seconds=wait,
            )
        )
    return events


def test_figures_mark_what_a_yeastar_visit_cannot_tell() -> None:
    yeastar = fold_visits(_visit("1", rings_reported=False, answered_by="2002"))
    yeastar += fold_visits(_visit("2", rings_reported=False, wait=20))
    f = queue_figures("sales", yeastar, QueueSettings(), (), T0, _at(3600))
    assert (f.offered, f.answered, f.abandoned) == (2, 1, 1)
    assert not f.exits_measured
    assert not f.agents["2002"].rings_measured and not f.agents["2002"].member_logged
    # Asterisk visits alone: measured, as before.
    asterisk = fold_visits(
        [
            *_visit("3", rings_reported=True, answered_by="2005"),
            QueueAgentMissed(pbx="office", at=_at(5), call_id="3", queue="sales", extension="2002"),
        ]
    )
    g = queue_figures("sales", asterisk, QueueSettings(), (), T0, _at(3600))
    assert g.exits_measured and g.agents["2002"].rings_measured and g.agents["2002"].ring_no_answer == 1
