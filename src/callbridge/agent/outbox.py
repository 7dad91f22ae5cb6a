"""The agent's durable outbox: a local SQLite file every event is written to before it is sent.

Rows get increasing sequence numbers (``AUTOINCREMENT``: never reused, even after deletes). The
hub acknowledges the highest sequence number it has committed; only then are rows deleted. The
outbox has an *epoch* (a random id made with the file) so the hub can tell a new outbox, whose
numbers start again, from an old one.

Bounded: when ``max_rows`` is reached the **oldest** rows are dropped to make room for the newest
(the hub has been unreachable for a long time by then; recent calls matter most for people at
their desks). Every drop is logged at ERROR, counted in the file, and reported to the hub, which
shows it on the settings page. Nothing is ever dropped silently.

The outbox also remembers which calls it has seen start but not end, so that an agent restarted
after a crash can close the calls that ended while it was not listening.

Writes use WAL with ``synchronous=NORMAL``: a committed row survives the agent being killed
(SIGKILL, OOM); a power cut may lose the last fraction of a second. ``durable=True`` makes every
write reach the disk (fsync per event) for those who prefer that cost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    call_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    UNIQUE (call_id, reference)
);
CREATE TABLE IF NOT EXISTS voicemails (
    reference TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS open_calls (
    call_id TEXT PRIMARY KEY,
    answered_by TEXT NOT NULL DEFAULT '',
    started_at TEXT NOT NULL
);
"""


# Pages of write-ahead log before SQLite checkpoints by itself (40 MB; the default is 4 MB).
AUTOCHECKPOINT_PAGES = 10_000


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    kind: str
    body: str  # JSON text, sent as is


@dataclass(frozen=True, slots=True)
class PendingVoicemail:
    reference: str  # "<context>/<mailbox>/<msg_id>"
    body: dict[str, Any]  # what is announced to the hub, and "audio": the .wav's path
    attempts: int


@dataclass(frozen=True, slots=True)
class Upload:
    id: int
    call_id: str
    reference: str  # the MixMonitor file name, as Asterisk gave it
    attempts: int


class Outbox:
    def __init__(self, path: Path | str, *, max_rows: int = 200_000, durable: bool = False) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        # The agent checkpoints from a thread (checkpoint()): a checkpoint copies and syncs
        # megabytes and would stall the AMI reader tens of ms. This bound only applies when
        # nobody does (the outbox used on its own).
        self._db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
        self._db.executescript(_SCHEMA)
        epoch = self.meta("epoch")
        if not epoch:
            epoch = secrets.token_hex(12)
            self.set_meta("epoch", epoch)
        self.epoch = epoch
        self.dropped = int(self.meta("dropped") or 0)
        self.depth = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        self.acked = int(self.meta("acked") or 0)
        self._changed: asyncio.Event | None = None
        self._last_drop_log = 0.0

    # -- meta -----------------------------------------------------------------------------------

    def meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else ""

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- writing --------------------------------------------------------------------------------

    def append(self, kind: str, body: dict[str, Any]) -> int:
        """Store one item; returns its sequence number. Call tracking rides in the same commit."""
        return self.append_many([(kind, body)])

    def append_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> int:
        """Store several items, in order, in one commit (a burst of AMI events costs one
        transaction, not one each); returns the sequence number of the last one (0 for none).
        Nothing is readable (so nothing is sent) before the commit."""
        if not items:
            return 0
        now = time.time()
        rows = [(kind, json.dumps(body, separators=(",", ":")), now) for kind, body in items]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self.depth + len(rows) <= self.max_rows:
                db.executemany("INSERT INTO outbox (kind, body, created_at) VALUES (?, ?, ?)", rows)
                added = len(rows)
            else:
                # Near the bound: row by row, so the oldest rows (of this burst too) make room.
                added = 0
                for row in rows:
                    if self.depth + added >= self.max_rows:
                        self.depth += added
                        added = 0
                        self._drop_oldest(self.depth - self.max_rows + 1)
                    db.execute("INSERT INTO outbox (kind, body, created_at) VALUES (?, ?, ?)", row)
                    added += 1
            seq = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
            for kind, body in items:
                if kind == "event":
                    self._track_call(body)
                    if body.get("kind") == "recording_available":
                        self._track_upload(body, seq, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            # The in-memory counters may have moved with the rolled back drops: read them again.
            self.depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            self.dropped = int(self.meta("dropped") or 0)
            raise
        self.depth += added
        if self._changed is not None:
            self._changed.set()
        return seq

    def _track_call(self, body: dict[str, Any]) -> None:
        kind = body.get("kind")
        call_id = body.get("call_id")
        if not isinstance(call_id, str):
            return
        if kind == "call_started":
            self._db.execute(
                "INSERT OR IGNORE INTO open_calls (call_id, started_at) VALUES (?, ?)",
                (call_id, str(body.get("at", ""))),
            )
        elif kind == "call_answered":
            self._db.execute(
                "UPDATE open_calls SET answered_by = ? WHERE call_id = ?",
                (str(body.get("extension", "")), call_id),
            )
        elif kind == "call_ended":
            self._db.execute("DELETE FROM open_calls WHERE call_id = ?", (call_id,))

    def _track_upload(self, body: dict[str, Any], seq: int, now: float) -> None:
        """A recording to upload, in the same commit as its event: it is sent once the hub has
        acknowledged ``seq`` (so the hub has its pending recording), and stays until the hub
        confirms it has the file."""
        call_id, reference = body.get("call_id"), body.get("recording")
        if isinstance(call_id, str) and isinstance(reference, str) and reference:
            self._db.execute(
                "INSERT OR IGNORE INTO uploads (seq, call_id, reference, created_at) VALUES (?, ?, ?, ?)",
                (seq, call_id, reference, now),
            )

    # -- recording uploads ----------------------------------------------------------------------

    def uploads_due(self, now: float, limit: int = 10) -> list[Upload]:
        """Uploads whose event the hub has acknowledged and whose next try is due, oldest first."""
        rows = self._db.execute(
            "SELECT id, call_id, reference, attempts FROM uploads WHERE seq <= ? AND next_at <= ?"
            " ORDER BY next_at, id LIMIT ?",
            (self.acked, now, limit),
        ).fetchall()
        return [Upload(int(i), str(c), str(r), int(a)) for i, c, r, a in rows]

    def uploads_next_at(self) -> float | None:
        row = self._db.execute("SELECT min(next_at) FROM uploads WHERE seq <= ?", (self.acked,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def upload_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM uploads").fetchone()[0])

    def upload_retry(self, upload_id: int, reason: str, next_at: float) -> None:
        self._db.execute(
            "UPDATE uploads SET attempts = attempts + 1, reason = ?, next_at = ? WHERE id = ?",
            (reason[:500], next_at, upload_id),
        )

    def upload_done(self, upload_id: int) -> None:
        self._db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    # -- voicemail messages ---------------------------------------------------------------------
    # A message stays (``done`` = 1) after it was sent: it is how the agent knows not to take it
    # again. Rows are a few hundred bytes; a PBX's whole voicemail history fits.

    def has_voicemail(self, reference: str) -> bool:
        row = self._db.execute("SELECT 1 FROM voicemails WHERE reference = ?", (reference,)).fetchone()
        return row is not None

    def add_voicemail(self, reference: str, body: dict[str, Any]) -> bool:
        """Take a message to send; False when it was taken before."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO voicemails (reference, body, created_at) VALUES (?, ?, ?)",
            (reference, json.dumps(body, separators=(",", ":")), time.time()),
        )
        return cur.rowcount > 0

    def voicemails_due(self, now: float, limit: int = 10) -> list[PendingVoicemail]:
        rows = self._db.execute(
            "SELECT reference, body, attempts FROM voicemails WHERE done = 0 AND next_at <= ?"
            " ORDER BY next_at, created_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [PendingVoicemail(str(r), json.loads(b), int(a)) for r, b, a in rows]

    def voicemails_next_at(self) -> float | None:
        row = self._db.execute("SELECT min(next_at) FROM voicemails WHERE done = 0").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def voicemail_retry(self, reference: str, reason: str, next_at: float) -> None:
        self._db.execute(
            "UPDATE voicemails SET attempts = attempts + 1, reason = ?, next_at = ? WHERE reference = ?",
            (reason[:500], next_at, reference),
        )

    def voicemail_done(self, reference: str) -> None:
        self._db.execute("UPDATE voicemails SET done = 1, reason = '' WHERE reference = ?", (reference,))

    def voicemails_pending(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM voicemails WHERE done = 0").fetchone()[0])

    def _drop_oldest(self, count: int) -> None:
        cur = self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (count,)
        )
        dropped = cur.rowcount
        self.depth -= dropped
        self.dropped += dropped
        self.set_meta("dropped", str(self.dropped))
        now = time.monotonic()
        if now - self._last_drop_log > 10.0:  # loud, but not one line per event
            self._last_drop_log = now
            log.error(
                "outbox %s is full (%d rows): dropped the oldest %d event(s), %d in all; "
                "the hub has not acknowledged events for a long time",
                self.path,
                self.max_rows,
                dropped,
                self.dropped,
            )

    # -- reading / acknowledging ------------------------------------------------------------------

    def read(self, after: int, limit: int) -> list[Row]:
        rows = self._db.execute(
            "SELECT seq, kind, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return [Row(int(s), str(k), str(b)) for s, k, b in rows]

    def ack(self, upto: int) -> int:
        """The hub committed every row up to ``upto``: delete them. Returns how many went."""
        if upto <= self.acked and self.depth == 0:
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute("DELETE FROM outbox WHERE seq <= ?", (upto,))
            if upto > self.acked:
                self.acked = upto
                self.set_meta("acked", str(upto))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.depth -= cur.rowcount
        return int(cur.rowcount)

    def last_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def oldest_age(self) -> float:
        row = self._db.execute("SELECT min(created_at) FROM outbox").fetchone()
        return max(0.0, time.time() - float(row[0])) if row and row[0] is not None else 0.0

    def open_calls(self) -> list[tuple[str, str]]:
        """(call id, answering extension or '') of calls seen starting and not yet ending."""
        rows = self._db.execute("SELECT call_id, answered_by FROM open_calls").fetchall()
        return [(str(c), str(a)) for c, a in rows]

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file (PASSIVE: writers go on meanwhile).
        Blocking I/O with its own connection: meant for a worker thread."""
        conn = sqlite3.connect(str(self.path), timeout=1.0)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def changed(self) -> asyncio.Event:
        """Set whenever a row is appended (created in the running loop on first use)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def close(self) -> None:
        self._db.close()
