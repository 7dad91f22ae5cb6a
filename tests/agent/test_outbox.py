"""The agent's outbox: sequence numbers, acknowledgement, bound, restart, open calls."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from callbridge.agent.outbox import Outbox


def _event(kind: str, call_id: str, **extra: str) -> dict[str, str]:
    return {"kind": kind, "pbx": "agent", "at": "2026-01-01T00:00:00+00:00", "call_id": call_id, **extra}


def test_rows_are_numbered_kept_until_acknowledged_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    seqs = [box.append("event", _event("call_started", f"c{i}")) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [r.seq for r in box.read(0, 10)] == seqs
    assert box.ack(seqs[2]) == 3
    assert [r.seq for r in box.read(0, 10)] == seqs[3:]
    epoch = box.epoch
    box.close()

    again = Outbox(path)
    assert again.epoch == epoch and again.depth == 2 and again.acked == seqs[2]
    assert json.loads(again.read(0, 10)[0].body)["call_id"] == "c3"
    # Numbers are never reused, even after every row was deleted.
    again.ack(seqs[-1])
    assert again.append("event", _event("call_started", "c9")) > seqs[-1]
    again.close()


def test_full_outbox_drops_the_oldest_loudly_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_rows=3)
    with caplog.at_level(logging.ERROR):
        for i in range(5):
            box.append("event", _event("call_ringing", f"c{i}", extension="1001"))
    assert box.depth == 3 and box.dropped == 2
    assert [json.loads(r.body)["call_id"] for r in box.read(0, 10)] == ["c2", "c3", "c4"]
    assert any("outbox" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)
    box.close()
    assert Outbox(tmp_path / "o.sqlite3", max_rows=3).dropped == 2


def test_open_calls_are_remembered_until_they_end(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.append("event", _event("call_started", "a", direction="inbound", from_number="", to_number=""))
    box.append("event", _event("call_started", "b", direction="inbound", from_number="", to_number=""))
    box.append("event", _event("call_answered", "a", extension="1001"))
    box.append("event", _event("call_ended", "b", disposition="missed"))
    box.append("raw", {"name": "Hangup", "headers": {}, "at": "2026-01-01T00:00:00+00:00"})
    assert box.open_calls() == [("a", "1001")]
    assert box.oldest_age() >= 0.0
    box.close()


def test_checkpoint_copies_the_log_while_the_outbox_stays_open(tmp_path: Path) -> None:
    import sqlite3

    box = Outbox(tmp_path / "o.sqlite3")
    box.append_many([("event", _event("call_started", f"c{i}", pad="x" * 2000)) for i in range(50)])
    before = (tmp_path / "o.sqlite3").stat().st_size
    box.checkpoint()  # as the agent does from a worker thread, with its own connection
    assert (tmp_path / "o.sqlite3").stat().st_size > before + 50 * 2000  # the rows left the log
    probe = sqlite3.connect(str(tmp_path / "o.sqlite3"))
    busy, pages, done = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    probe.close()
    assert busy == 0 and pages == done
    assert box.append("event", _event("call_started", "after")) > 0
    assert len(box.read(0, 100)) == 51
    box.close()
