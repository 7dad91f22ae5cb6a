"""Analytics rollups: per (user, bucket, direction, PBX) counters kept next to the call log.

They change in the same unit of work as the call rows (``SqlCalls.save_many`` and the PostgreSQL
batch path call :meth:`SqlRollups.read` before they write and :meth:`SqlRollups.changed` after):
a call's old contribution is taken out and its new one put in, so a call folded again, an event
that arrives late or twice, leaves the rollups as a recount from the call log would.

The "called back" figure of a missed call depends on other calls (the first outbound call to
its number after it ended), so it is kept beside the call (``call_callbacks``) and recomputed for
the missed calls of a number whenever an outbound call to it is written. It lives in a table of
its own, not on the call's row: a unit of work that writes an outbound call must be able to
change the figure of a missed call another unit holds locked (PostgreSQL ingest runs lanes side
by side), and one advisory lock per number, taken in order, keeps two such units from missing
each other's calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    and_,
    case,
    delete,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    union,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from callbridge.domain.analytics import (
    CALLBACK_WINDOW,
    COUNTER_NAMES,
    MISSED_DISPOSITIONS,
    RING_BOUNDS,
    RING_BUCKETS,
    CallFacts,
    Counters,
    Group,
    LoggedCall,
    Period,
    RollupKey,
    cover,
    recount,
    rollup_delta,
)
from callbridge.domain.events import Direction, Disposition
from callbridge.store.calls import call_users, calls
from callbridge.store.directory import contact_tags
from callbridge.store.tables import UtcDateTime, in_list, metadata, users

HISTOGRAM_COLUMNS = tuple(f"ring_h{i:02d}" for i in range(RING_BUCKETS))

call_rollups = Table(
    "call_rollups",
    metadata,
    # 0: every call once; a user's id: the calls they took part in (call_users).
    Column("user_id", Integer, nullable=False),
    Column("grain", Integer, nullable=False),  # bucket length in seconds: 900, 3600 or 86400
    Column("bucket", BigInteger, nullable=False),  # bucket start, epoch seconds (UTC)
    Column("direction", String(16), nullable=False),
    Column("pbx", String(64), nullable=False),
    *(Column(name, BigInteger, nullable=False, server_default="0") for name in COUNTER_NAMES),
    *(Column(name, Integer, nullable=False, server_default="0") for name in HISTOGRAM_COLUMNS),
    PrimaryKeyConstraint("grain", "user_id", "direction", "bucket", "pbx", name="pk_call_rollups"),
)

# A missed inbound call whose number was called back: seconds from its end to the first
# outbound call to that number (within CALLBACK_WINDOW). No foreign key on purpose: its check
# would take a share lock on the call's row, which the unit ingesting that call holds for update
# while it waits for this unit's advisory lock — a deadlock. Calls are never deleted.
call_callbacks = Table(
    "call_callbacks",
    metadata,
    Column("call_id", Integer, primary_key=True),
    Column("seconds", Integer, nullable=False),
)

_NOT_ANSWERED = sorted(d.value for d in MISSED_DISPOSITIONS)


@dataclass(frozen=True, slots=True)
class StoredCall:
    facts: CallFacts
    number: str
    ended_at: datetime | None

    @property
    def missed_inbound(self) -> bool:
        return LoggedCall(0, self.facts, self.number, self.ended_at).missed_inbound

    @property
    def outbound(self) -> bool:
        return LoggedCall(0, self.facts, self.number, self.ended_at).outbound


def _row_values(key: RollupKey, counters: Counters) -> dict[str, Any]:
    values: dict[str, Any] = {
        "user_id": key.user_id,
        "grain": key.grain,
        "bucket": key.bucket,
        "direction": key.direction,
        "pbx": key.pbx,
    }
    for name in COUNTER_NAMES:
        values[name] = getattr(counters, name)
    for name, count in zip(HISTOGRAM_COLUMNS, counters.ring_histogram, strict=True):
        values[name] = count
    return values


def counters_from(row: Any) -> Counters:
    return Counters.of(
        (int(getattr(row, name) or 0) for name in COUNTER_NAMES),
        (int(getattr(row, name) or 0) for name in HISTOGRAM_COLUMNS),
    )


_SCALARS = len(COUNTER_NAMES)


def counters_at(row: Any) -> Counters:
    """The counters of a row whose first column is a key and the rest :func:`_sums` in order."""
    v = [int(x or 0) for x in tuple(row)[1:]]
    return Counters(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], tuple(v[_SCALARS:]))


def _sums() -> list[Any]:
    return [func.sum(call_rollups.c[name]).label(name) for name in (*COUNTER_NAMES, *HISTOGRAM_COLUMNS)]


class SqlRollups:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    # -- keeping them -------------------------------------------------------------------------------

    async def read(self, ids: Iterable[int]) -> dict[int, StoredCall]:
        """The calls as stored now (what they add to the rollups)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        query = (
            select(
                calls.c.id,
                calls.c.pbx,
                calls.c.direction,
                calls.c.disposition,
                calls.c.started_at,
                calls.c.ended_at,
                calls.c.ring_seconds,
                calls.c.talk_seconds,
                call_callbacks.c.seconds.label("callback_seconds"),
                calls.c.external_number,
            )
            .select_from(calls.outerjoin(call_callbacks, call_callbacks.c.call_id == calls.c.id))
            .where(in_list(self.session, calls.c.id, wanted))
        )
        members: dict[int, set[int]] = {}
        for call_id, user_id in (
            await self.session.execute(
                select(call_users.c.call_id, call_users.c.user_id).where(
                    in_list(self.session, call_users.c.call_id, wanted)
                )
            )
        ).all():
            members.setdefault(int(call_id), set()).add(int(user_id))
        out: dict[int, StoredCall] = {}
        for row in (await self.session.execute(query)).all():
            out[int(row.id)] = StoredCall(
                CallFacts(
                    pbx=row.pbx,
                    direction=Direction(row.direction) if row.direction else None,
                    disposition=Disposition(row.disposition) if row.disposition else None,
                    started_at=row.started_at,
                    ring_seconds=int(row.ring_seconds),
                    talk_seconds=int(row.talk_seconds),
                    callback_seconds=row.callback_seconds,
                    user_ids=frozenset(members.get(int(row.id), ())),
                ),
                row.external_number,
                row.ended_at,
            )
        return out

    async def changed(
        self, before: dict[int, StoredCall], written: dict[int, tuple[dict[str, Any], frozenset[int]]]
    ) -> None:
        """The calls read into ``before`` were written with these column values and users: move
        their contributions (only of the calls whose figures changed)."""
        old: dict[int, StoredCall] = {}
        new: dict[int, StoredCall] = {}
        for call_id, (values, user_ids) in written.items():
            previous = before.get(call_id)
            if previous is None:
                continue
            now_stored = StoredCall(
                CallFacts(
                    pbx=previous.facts.pbx,
                    direction=Direction(values["direction"]) if values["direction"] else None,
                    disposition=Disposition(values["disposition"]) if values["disposition"] else None,
                    started_at=values["started_at"],
                    ring_seconds=int(values["ring_seconds"]),
                    talk_seconds=int(values["talk_seconds"]),
                    callback_seconds=previous.facts.callback_seconds,
                    user_ids=frozenset(user_ids),
                ),
                values["external_number"],
                values["ended_at"],
            )
            if now_stored != previous:  # most events change nothing the figures count
                old[call_id], new[call_id] = previous, now_stored
        if not old:
            return
        await self._callbacks(old, new)
        delta = rollup_delta([c.facts for c in old.values()], [c.facts for c in new.values()])
        await self.add(delta)

    async def add(self, delta: dict[RollupKey, Counters]) -> None:
        if not delta:
            return
        upsert = (postgresql.insert if self._postgres else sqlite.insert)(call_rollups)
        names = (*COUNTER_NAMES, *HISTOGRAM_COLUMNS)
        statement = upsert.on_conflict_do_update(
            index_elements=["grain", "user_id", "direction", "bucket", "pbx"],
            set_={name: call_rollups.c[name] + upsert.excluded[name] for name in names},
        )
        # One order for every writer: two units adding to the same rows never wait on each other
        # in a circle.
        ordered = sorted(
            delta.items(),
            key=lambda item: (item[0].user_id, item[0].grain, item[0].bucket, item[0].direction, item[0].pbx),
        )
        await self.session.execute(statement, [_row_values(key, value) for key, value in ordered])

    async def _callbacks(self, old: dict[int, StoredCall], new: dict[int, StoredCall]) -> None:
        """Bring ``call_callbacks`` up to date for the missed calls these changes touch
        (the written ones, and those of the numbers the written outbound calls went to); adds
        the touched calls to ``old`` and ``new``."""
        windows: list[tuple[str, datetime, datetime]] = []
        for call_id, stored in new.items():
            before = old[call_id]
            if (before.outbound, before.number, before.facts.started_at) == (
                stored.outbound,
                stored.number,
                stored.facts.started_at,
            ):
                continue  # the missed calls it may have called back stay as they are
            # The missed calls it called back before, and those it calls back now.
            for state in (before, stored):
                if state.outbound:
                    start = state.facts.started_at
                    windows.append((state.number, start - CALLBACK_WINDOW, start))
        mine = {
            i
            for i, s in new.items()
            if s.missed_inbound
            or old[i].missed_inbound
            or s.facts.callback_seconds is not None
            or old[i].facts.callback_seconds is not None
        }
        if not mine and not windows:
            return
        if self._postgres:
            # A call's callback changes only under its number's advisory lock (taken here in one
            # order: no waiting in a circle); the unit that writes an outbound call may change
            # the callback of a missed call another unit is ingesting, without its row lock (to
            # wait for that row could wait in a circle). So the callbacks these deltas start
            # from are read again below, under the lock: the values the rollups hold now.
            numbers = {w[0] for w in windows}
            numbers.update(n for i in mine for n in (old[i].number, new[i].number) if n)
            for number in sorted(numbers):
                await self.session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": "callback:" + number}
                )
        if mine:
            query = select(call_callbacks.c.call_id, call_callbacks.c.seconds).where(
                in_list(self.session, call_callbacks.c.call_id, sorted(mine))
            )
            now_held = {int(r.call_id): int(r.seconds) for r in (await self.session.execute(query)).all()}
            for i in mine:
                held = now_held.get(i)
                old[i] = StoredCall(_with_callback(old[i].facts, held), old[i].number, old[i].ended_at)
                new[i] = StoredCall(_with_callback(new[i].facts, held), new[i].number, new[i].ended_at)
        candidates = set(mine)
        if windows:  # one statement for every outbound call of the batch
            query = select(calls.c.id).where(
                calls.c.direction == Direction.INBOUND.value,
                calls.c.disposition.in_(_NOT_ANSWERED),
                or_(
                    *(
                        and_(calls.c.external_number == n, calls.c.ended_at >= low, calls.c.ended_at <= high)
                        for n, low, high in sorted(set(windows))
                    )
                ),
            )
            candidates.update(int(i) for i in (await self.session.execute(query)).scalars())
        # Missed calls outside this unit: as committed now (under the lock), callback included.
        outside = sorted(candidates - set(new))
        others = await self.read(outside)
        old.update(others)
        new.update(others)
        missed = sorted(i for i in candidates if new[i].missed_inbound)
        first: dict[int, datetime] = {}
        if missed:
            o = calls.alias("callback")
            query = (
                select(calls.c.id, func.min(o.c.started_at, type_=UtcDateTime).label("first"))
                .select_from(
                    calls.join(
                        o,
                        and_(
                            o.c.external_number == calls.c.external_number,
                            o.c.direction == Direction.OUTBOUND.value,
                            o.c.started_at >= calls.c.ended_at,
                        ),
                    )
                )
                .where(in_list(self.session, calls.c.id, missed))
                .group_by(calls.c.id)
            )
            first = {int(r.id): r.first for r in (await self.session.execute(query)).all()}
        changes: list[dict[str, Any]] = []
        for call_id in sorted(candidates):
            stored = new[call_id]
            wanted: int | None = None
            if stored.missed_inbound and call_id in first and stored.ended_at is not None:
                delay = first[call_id] - stored.ended_at
                if delay < CALLBACK_WINDOW:
                    wanted = max(0, round(delay.total_seconds()))
            if wanted != stored.facts.callback_seconds:
                changes.append({"b_id": call_id, "b_seconds": wanted})
                new[call_id] = StoredCall(
                    _with_callback(stored.facts, wanted), stored.number, stored.ended_at
                )
        if changes:
            await self.session.execute(
                delete(call_callbacks).where(
                    in_list(self.session, call_callbacks.c.call_id, [c["b_id"] for c in changes])
                )
            )
            added = [
                {"call_id": c["b_id"], "seconds": c["b_seconds"]}
                for c in changes
                if c["b_seconds"] is not None
            ]
            if added:
                await self.session.execute(insert(call_callbacks), added)

    async def rebuild(self) -> int:
        """Recount every rollup and callback from the call log (after an import, or to check
        them); the number of calls counted. Reads the whole log: a maintenance command."""
        ids = [int(i) for i in (await self.session.execute(select(calls.c.id))).scalars()]
        log: list[LoggedCall] = []
        for start in range(0, len(ids), 5000):
            for call_id, stored in (await self.read(ids[start : start + 5000])).items():
                log.append(LoggedCall(call_id, stored.facts, stored.number, stored.ended_at))
        delays, rows = recount(log)
        await self.session.execute(call_rollups.delete())
        await self.session.execute(call_callbacks.delete())
        if delays:
            await self.session.execute(
                insert(call_callbacks), [{"call_id": i, "seconds": s} for i, s in sorted(delays.items())]
            )
        await self.add(rows)
        return len(ids)

    async def log_span(self, since: datetime | None = None) -> tuple[datetime, datetime] | None:
        """The UTC days ``[first, end)`` that hold calls or rollup rows (from ``since`` on, a UTC
        midnight), for :meth:`rebuild_days`; ``None`` when there is nothing."""
        low = since.timestamp() if since is not None else None
        call_span = select(
            func.min(calls.c.started_at, type_=UtcDateTime), func.max(calls.c.started_at, type_=UtcDateTime)
        )
        row_span = select(func.min(call_rollups.c.bucket), func.max(call_rollups.c.bucket))
        if since is not None:
            call_span = call_span.where(calls.c.started_at >= since)
            row_span = row_span.where(call_rollups.c.bucket >= int(low or 0))
        first_call, last_call = (await self.session.execute(call_span)).one()
        first_row, last_row = (await self.session.execute(row_span)).one()
        starts = [int(first_call.timestamp())] if first_call is not None else []
        ends = [int(last_call.timestamp())] if last_call is not None else []
        if first_row is not None:
            starts.append(int(first_row))
            ends.append(int(last_row))
        if not starts:
            return None
        first = min(starts) - min(starts) % 86400
        end = max(ends) - max(ends) % 86400 + 86400
        return datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(end, UTC)

    async def rebuild_days(self, start: datetime, end: datetime) -> tuple[int, int]:
        """Recount, from the call log, the rollup rows of the UTC days ``[start, end)`` (both
        midnights) and the callbacks of the calls started in them; ``(calls, rows)`` counted.

        Safe beside ingest: no call may be written between the read and the write. On
        PostgreSQL the call table is locked against writers (``SHARE ROW EXCLUSIVE``: reads go
        on, a writer waits for this transaction; every unit that changes the rollups writes a
        call first, so none holds what this one needs while it waits). On SQLite the first
        statement is a write, which takes the database's write lock before anything is read.
        Keep the range short (a day): writers wait for as long as it runs."""
        low, high = int(start.timestamp()), int(end.timestamp())
        if low % 86400 or high % 86400 or high <= low:
            raise ValueError("rebuild_days takes whole UTC days")
        if self._postgres:
            await self.session.execute(text("LOCK TABLE calls IN SHARE ROW EXCLUSIVE MODE"))
        await self.session.execute(
            delete(call_rollups).where(call_rollups.c.bucket >= low, call_rollups.c.bucket < high)
        )
        ids = [
            int(i)
            for i in (
                await self.session.execute(
                    select(calls.c.id).where(calls.c.started_at >= start, calls.c.started_at < end)
                )
            ).scalars()
        ]
        mine: dict[int, StoredCall] = {}
        for at in range(0, len(ids), 5000):
            mine.update(await self.read(ids[at : at + 5000]))
        # The outbound calls that may have called back this range's missed calls (they start
        # after the missed call ended, so never before ``start``; within the callback window).
        missed = [c for c in mine.values() if LoggedCall(0, c.facts, c.number, c.ended_at).missed_inbound]
        later: dict[int, StoredCall] = {}
        if missed:
            numbers = sorted({c.number for c in missed})
            until = max(c.ended_at for c in missed if c.ended_at is not None) + CALLBACK_WINDOW
            for at in range(0, len(numbers), 5000):
                found = [
                    int(i)
                    for i in (
                        await self.session.execute(
                            select(calls.c.id).where(
                                calls.c.direction == Direction.OUTBOUND.value,
                                in_list(self.session, calls.c.external_number, numbers[at : at + 5000]),
                                calls.c.started_at >= end,
                                calls.c.started_at <= until,
                            )
                        )
                    ).scalars()
                ]
                for step in range(0, len(found), 5000):
                    later.update(await self.read(found[step : step + 5000]))
        log = [LoggedCall(i, c.facts, c.number, c.ended_at) for i, c in (*mine.items(), *later.items())]
        delays, counted = recount(log)
        rows = {key: value for key, value in counted.items() if low <= key.bucket < high}
        for at in range(0, len(ids), 5000):
            await self.session.execute(
                delete(call_callbacks).where(
                    in_list(self.session, call_callbacks.c.call_id, ids[at : at + 5000])
                )
            )
        kept = [{"call_id": i, "seconds": s} for i, s in sorted(delays.items()) if i in mine]
        if kept:
            await self.session.execute(insert(call_callbacks), kept)
        await self.add(rows)
        return len(ids), len(rows)

    async def drop_stray_callbacks(self) -> int:
        """Callbacks kept for calls the log does not have (none should be); how many went."""
        result = await self.session.execute(
            delete(call_callbacks).where(call_callbacks.c.call_id.not_in(select(calls.c.id)))
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- reading them -------------------------------------------------------------------------------

    async def groups(
        self,
        period: Period,
        *,
        user_id: int | None,
        direction: str | None,
        group: Group | None,
    ) -> dict[Any, Counters]:
        """Counters per group key over ``period`` (``group=None``: one total under key None).
        ``user_id``: that user's calls only; ``None``: every call (group=user: each user's)."""
        if group is not None and group.from_call_log:
            return await self._from_call_log(group, period, user_id=user_id, direction=direction)
        scope: list[ColumnElement[bool]] = []
        if user_id is not None:
            scope.append(call_rollups.c.user_id == user_id)
        elif group is Group.USER:
            scope.append(call_rollups.c.user_id > 0)
        else:
            scope.append(call_rollups.c.user_id == 0)
        # Direction comes before the bucket in the primary key: naming it (or every one of them)
        # lets the index go straight to the period's rows.
        if direction is not None:
            scope.append(call_rollups.c.direction == direction)
        else:
            scope.append(call_rollups.c.direction.in_(["", *(d.value for d in Direction)]))
        out: dict[Any, Counters] = {}
        if group is not None and group.by_time:
            grain = period.grain()
            for segment in period.segments():
                local = call_rollups.c.bucket + literal(segment.offset, BigInteger)
                key = _time_key_sql(group, local)
                query = (
                    select(key.label("key"), *_sums())
                    .where(
                        *scope,
                        call_rollups.c.grain == grain,
                        call_rollups.c.bucket >= segment.start,
                        call_rollups.c.bucket < segment.end,
                    )
                    .group_by(key)
                )
                for row in (await self.session.execute(query)).all():
                    k = int(row.key)
                    found = counters_at(row)
                    out[k] = out[k] + found if k in out else found
            return out
        ranges = [
            and_(call_rollups.c.grain == g, call_rollups.c.bucket >= a, call_rollups.c.bucket < b)
            for g, a, b in cover(period.start, period.end)
        ]
        where = [*scope, or_(*ranges) if ranges else false()]
        column: Any
        if group is Group.USER:
            column = call_rollups.c.user_id
        elif group is Group.DIRECTION:
            column = call_rollups.c.direction
        elif group is Group.PBX:
            column = call_rollups.c.pbx
        else:  # the totals
            column = literal_column("NULL")
        query = select(column.label("key"), *_sums()).where(*where)
        if column is not None and group in (Group.USER, Group.DIRECTION, Group.PBX):
            query = query.group_by(column)
        for row in (await self.session.execute(query)).all():
            if group not in (Group.USER, Group.DIRECTION, Group.PBX) and row.offered is None:
                continue  # no rows at all: an aggregate over nothing
            out[row.key if group in (Group.USER, Group.DIRECTION, Group.PBX) else None] = counters_at(row)
        return out

    async def user_names(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        query = select(users.c.id, users.c.name, users.c.display_name).where(users.c.id.in_(list(ids)))
        return {int(r.id): r.display_name or r.name for r in (await self.session.execute(query)).all()}

    async def _from_call_log(
        self, group: Group, period: Period, *, user_id: int | None, direction: str | None
    ) -> dict[Any, Counters]:
        """Figures by what the call's row says (its queue, its call type) or by its contact's and
        company's tags as they are now (a contact's tags change), counted from the call log
        itself, not from rollups. A call without a queue or a type is under the key ``None``."""
        source: Any = calls
        key: Any
        if group is Group.TAG:
            tagged = union(
                select(calls.c.id.label("call_id"), contact_tags.c.tag_folded.label("tag")).join(
                    contact_tags, contact_tags.c.contact_id == calls.c.contact_id
                ),
                select(calls.c.id.label("call_id"), contact_tags.c.tag_folded.label("tag")).join(
                    contact_tags, contact_tags.c.contact_id == calls.c.company_id
                ),
            ).subquery()
            source, key = calls.join(tagged, tagged.c.call_id == calls.c.id), tagged.c.tag
        elif group is Group.QUEUE:
            key = calls.c.queue
        else:
            key = func.nullif(calls.c.call_type, "")
        answered = calls.c.disposition == Disposition.ANSWERED.value
        abandoned = calls.c.disposition == Disposition.ABANDONED.value

        def count(condition: ColumnElement[bool], value: Any = 1) -> Any:
            return func.coalesce(func.sum(case((condition, value), else_=0)), 0)

        called_back = and_(~answered, call_callbacks.c.seconds.is_not(None))
        columns = [
            func.count().label("offered"),
            count(answered).label("answered"),
            count(and_(~answered, ~abandoned)).label("missed"),
            count(abandoned).label("abandoned"),
            count(answered, calls.c.ring_seconds).label("ring_seconds"),
            count(answered, calls.c.talk_seconds).label("talk_seconds"),
            count(called_back).label("callbacks"),
            count(called_back, call_callbacks.c.seconds).label("callback_seconds"),
        ]
        bounds = (0, *RING_BOUNDS)
        for index, name in enumerate(HISTOGRAM_COLUMNS):
            condition = and_(answered, calls.c.ring_seconds >= bounds[index])
            if index < len(RING_BOUNDS):
                condition = and_(condition, calls.c.ring_seconds < RING_BOUNDS[index])
            columns.append(count(condition).label(name))
        query = (
            select(key.label("key"), *columns)
            .select_from(source.outerjoin(call_callbacks, call_callbacks.c.call_id == calls.c.id))
            .where(
                calls.c.disposition.is_not(None),
                calls.c.started_at >= period.start_at,
                calls.c.started_at < period.end_at,
            )
            .group_by(key)
        )
        if direction is not None:
            query = query.where(calls.c.direction == direction)
        if user_id is not None:
            mine = select(call_users.c.call_id).where(call_users.c.user_id == user_id)
            query = query.where(calls.c.id.in_(mine))
        return {row.key: counters_at(row) for row in (await self.session.execute(query)).all()}


def _time_key_sql(group: Group, local: Any) -> Any:
    if group is Group.HOUR:
        return local // 3600
    day = local // 86400
    if group is Group.DAY:
        return day
    if group is Group.WEEK:
        return (day + 3) // 7
    return ((day + 3) % 7) * 24 + (local % 86400) // 3600


def _with_callback(facts: CallFacts, seconds: int | None) -> CallFacts:
    return CallFacts(
        facts.pbx,
        facts.direction,
        facts.disposition,
        facts.started_at,
        facts.ring_seconds,
        facts.talk_seconds,
        seconds,
        facts.user_ids,
    )


__all__ = ["HISTOGRAM_COLUMNS", "SqlRollups", "StoredCall", "call_callbacks", "call_rollups", "counters_from"]
