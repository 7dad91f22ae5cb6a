"""Call figures: what one finished call adds to the analytics rollups, and how the rollups'
counters become the figures people read (see docs/analytics.md for every definition).

Rollups are counted in UTC buckets of three sizes (a quarter hour, an hour, a day). Every IANA
time zone in use today is offset from UTC by a whole number of quarter hours (India +5:30,
Nepal +5:45, Chatham +12:45), so a local hour, day or week is always a whole number of quarter
hours: figures are exact in any zone. The larger buckets only make long periods cheaper to add up.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum

from callbridge.domain.errors import InvalidInput
from callbridge.domain.events import Direction, Disposition

QUARTER = 900
HOUR = 3600
DAY = 86400
GRAINS = (DAY, HOUR, QUARTER)  # largest first

# A missed call counts as called back when an outbound call to its number starts within this
# long after it ended.
CALLBACK_WINDOW = timedelta(days=7)

# Upper bounds (seconds, exclusive) of the ring-time histogram kept for answered calls; the last
# bucket is open (300 s and more). The 90th percentile is interpolated inside its bucket.
RING_BOUNDS: tuple[int, ...] = (3, 6, 9, 12, 15, 20, 25, 30, 40, 50, 60, 90, 120, 180, 300)
RING_BUCKETS = len(RING_BOUNDS) + 1

# Most periods a group=hour report covers (a month and a bit).
MAX_HOUR_DAYS = 31
MAX_PERIOD_DAYS = 3 * 366


class Group(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    WEEKDAY_HOUR = "weekday_hour"
    USER = "user"
    QUEUE = "queue"
    DIRECTION = "direction"
    PBX = "pbx"
    TAG = "tag"
    CALL_TYPE = "call_type"

    @property
    def from_call_log(self) -> bool:
        """Counted from the call log rather than the rollups: what a call's row says about it
        (its queue, its type) or its contact's tags as they are now."""
        return self in (Group.QUEUE, Group.TAG, Group.CALL_TYPE)

    @property
    def by_time(self) -> bool:
        return self in (Group.HOUR, Group.DAY, Group.WEEK, Group.WEEKDAY_HOUR)

    @property
    def step(self) -> int:
        """The length (seconds) every group boundary is a multiple of, in local time."""
        return HOUR if self in (Group.HOUR, Group.WEEKDAY_HOUR) else DAY


def parse_group(value: str) -> Group:
    try:
        return Group(value.strip().lower())
    except ValueError as exc:
        choices = ", ".join(g.value for g in Group)
        raise InvalidInput(f"unknown group {value[:40]!r}; use one of {choices}") from exc


def ring_bucket(seconds: int) -> int:
    for index, bound in enumerate(RING_BOUNDS):
        if seconds < bound:
            return index
    return len(RING_BOUNDS)


@dataclass(frozen=True, slots=True)
class Counters:
    """The additive figures of a set of calls (a rollup row, or a group of them)."""

    offered: int = 0
    answered: int = 0
    missed: int = 0
    abandoned: int = 0
    ring_seconds: int = 0  # summed over answered calls
    talk_seconds: int = 0  # summed over answered calls
    callbacks: int = 0  # missed or abandoned calls whose number was called back
    callback_seconds: int = 0  # summed delay of those callbacks
    ring_histogram: tuple[int, ...] = (0,) * RING_BUCKETS

    @classmethod
    def of(cls, scalars: Iterable[int], histogram: Iterable[int]) -> Counters:
        """From the scalar counters in field order, and the ring histogram."""
        values: dict[str, int] = dict(zip(COUNTER_NAMES, scalars, strict=True))
        return cls(**values, ring_histogram=tuple(histogram))

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.offered + other.offered,
            self.answered + other.answered,
            self.missed + other.missed,
            self.abandoned + other.abandoned,
            self.ring_seconds + other.ring_seconds,
            self.talk_seconds + other.talk_seconds,
            self.callbacks + other.callbacks,
            self.callback_seconds + other.callback_seconds,
            tuple(map(operator.add, self.ring_histogram, other.ring_histogram)),
        )

    def __neg__(self) -> Counters:
        return Counters(
            -self.offered,
            -self.answered,
            -self.missed,
            -self.abandoned,
            -self.ring_seconds,
            -self.talk_seconds,
            -self.callbacks,
            -self.callback_seconds,
            tuple(-a for a in self.ring_histogram),
        )

    @property
    def is_zero(self) -> bool:
        return self == ZERO

    def figures(self) -> dict[str, float | int | None]:
        def ratio(a: int, b: int, digits: int = 1) -> float | None:
            return round(a / b, digits) if b else None

        return {
            "offered": self.offered,
            "answered": self.answered,
            "missed": self.missed,
            "abandoned": self.abandoned,
            "answer_rate": ratio(self.answered, self.offered, 4),
            "avg_ring_seconds": ratio(self.ring_seconds, self.answered),
            "p90_ring_seconds": percentile(self.ring_histogram, 0.9),
            "avg_talk_seconds": ratio(self.talk_seconds, self.answered),
            "callbacks": self.callbacks,
            "avg_callback_seconds": ratio(self.callback_seconds, self.callbacks),
        }


_SCALARS = [f for f in dataclasses.fields(Counters) if f.name != "ring_histogram"]
ZERO = Counters()
COUNTER_NAMES: tuple[str, ...] = tuple(f.name for f in _SCALARS)


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of the values counted in ``histogram`` (buckets :data:`RING_BOUNDS`),
    interpolated linearly inside the bucket it falls in; ``None`` for no values. Exact to within
    the width of that bucket; a quantile in the open last bucket is given as its lower bound."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        if count > 0 and seen + count >= rank:
            low = RING_BOUNDS[index - 1] if index > 0 else 0
            if index >= len(RING_BOUNDS):
                return float(low)
            high = RING_BOUNDS[index]
            return round(low + (high - low) * (rank - seen) / count, 1)
        seen += count
    return float(RING_BOUNDS[-1])  # pragma: no cover - rank <= total always lands above


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What of a stored call the figures depend on."""

    pbx: str
    direction: Direction | None
    disposition: Disposition | None
    started_at: datetime
    ring_seconds: int
    talk_seconds: int
    callback_seconds: int | None
    user_ids: frozenset[int]


def counters_of(call: CallFacts) -> Counters:
    """What one call adds. A call counts once it has ended (it has a disposition): answered;
    abandoned (the caller gave up); or missed (nobody answered: no answer, busy, voicemail,
    failed). Ring and talk times are of answered calls only."""
    if call.disposition is None:
        return ZERO
    answered = call.disposition is Disposition.ANSWERED
    abandoned = call.disposition is Disposition.ABANDONED
    histogram = [0] * RING_BUCKETS
    if answered:
        histogram[ring_bucket(call.ring_seconds)] = 1
    called_back = not answered and call.callback_seconds is not None
    return Counters(
        offered=1,
        answered=int(answered),
        missed=int(not answered and not abandoned),
        abandoned=int(abandoned),
        ring_seconds=call.ring_seconds if answered else 0,
        talk_seconds=call.talk_seconds if answered else 0,
        callbacks=int(called_back),
        callback_seconds=(call.callback_seconds or 0) if called_back else 0,
        ring_histogram=tuple(histogram),
    )


def epoch(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def bucket_of(moment: datetime, grain: int) -> int:
    """The start (epoch seconds, UTC) of the ``grain``-long bucket holding ``moment``."""
    seconds = epoch(moment)
    return seconds - seconds % grain


@dataclass(frozen=True, slots=True)
class RollupKey:
    """One rollup row: ``user_id`` 0 counts every call once; a user's rows count the calls they
    took part in (so one call may count for several users)."""

    user_id: int
    grain: int
    bucket: int
    direction: str  # "" when the PBX never said
    pbx: str


def contributions(call: CallFacts) -> dict[RollupKey, Counters]:
    counters = counters_of(call)
    if counters.is_zero:
        return {}
    direction = call.direction.value if call.direction else ""
    out: dict[RollupKey, Counters] = {}
    for user_id in (0, *sorted(call.user_ids)):
        for grain in GRAINS:
            out[RollupKey(user_id, grain, bucket_of(call.started_at, grain), direction, call.pbx)] = counters
    return out


def rollup_delta(before: Sequence[CallFacts], after: Sequence[CallFacts]) -> dict[RollupKey, Counters]:
    """What to add to the rollups when the calls ``before`` became ``after``: the new
    contributions less the old ones, without the keys that do not change."""
    delta: dict[RollupKey, Counters] = {}
    for facts, sign in ((before, -1), (after, 1)):
        for call in facts:
            for key, counters in contributions(call).items():
                delta[key] = delta.get(key, ZERO) + (counters if sign > 0 else -counters)
    return {key: value for key, value in delta.items() if not value.is_zero}


MISSED_DISPOSITIONS = frozenset(set(Disposition) - {Disposition.ANSWERED})


@dataclass(frozen=True, slots=True)
class LoggedCall:
    """A call as the call log has it, for a recount from scratch."""

    id: int
    facts: CallFacts  # callback_seconds is ignored: the recount works it out
    number: str  # the external number
    ended_at: datetime | None

    @property
    def missed_inbound(self) -> bool:
        f = self.facts
        return (
            f.direction is Direction.INBOUND
            and f.disposition in MISSED_DISPOSITIONS
            and self.ended_at is not None
            and bool(self.number)
        )

    @property
    def outbound(self) -> bool:
        return self.facts.direction is Direction.OUTBOUND and bool(self.number)


def callback_delay(ended_at: datetime, outbound_starts: Sequence[datetime]) -> int | None:
    """Seconds from a missed call's end to the first outbound call to its number that started
    at or after it (``outbound_starts`` sorted), when within :data:`CALLBACK_WINDOW`."""
    index = bisect.bisect_left(outbound_starts, ended_at)
    if index == len(outbound_starts):
        return None
    delay = outbound_starts[index] - ended_at
    return max(0, round(delay.total_seconds())) if delay < CALLBACK_WINDOW else None


def recount(log: Iterable[LoggedCall]) -> tuple[dict[int, int], dict[RollupKey, Counters]]:
    """Every missed call's callback delay and every rollup row, from the call log alone."""
    items = list(log)
    starts: dict[str, list[datetime]] = {}
    for call in items:
        if call.outbound:
            starts.setdefault(call.number, []).append(call.facts.started_at)
    for found in starts.values():
        found.sort()
    delays: dict[int, int] = {}
    rows: dict[RollupKey, Counters] = {}
    for call in items:
        delay = None
        if call.missed_inbound and call.ended_at is not None:
            delay = callback_delay(call.ended_at, starts.get(call.number, []))
        if delay is not None:
            delays[call.id] = delay
        facts = dataclasses.replace(call.facts, callback_seconds=delay)
        for key, counters in contributions(facts).items():
            rows[key] = rows.get(key, ZERO) + counters
    return delays, rows


# -- periods in a time zone -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of UTC time ``[start, end)`` (epoch seconds) over which the zone's offset from
    UTC is ``offset`` seconds."""

    start: int
    end: int
    offset: int


def _offset(zone: tzinfo, at: int) -> int:
    moment = datetime.fromtimestamp(at, UTC).astimezone(zone)
    delta = moment.utcoffset()
    return int(delta.total_seconds()) if delta is not None else 0


def segments(zone: tzinfo, start: int, end: int) -> list[Segment]:
    """``[start, end)`` cut where ``zone`` changes its offset (summer time)."""
    out: list[Segment] = []
    at = start
    current = _offset(zone, at)
    probe = at
    while probe < end:
        step = min(probe + DAY, end)
        if step < end and _offset(zone, step) == current:
            probe = step
            continue
        if step >= end and _offset(zone, end - 1) == current:
            break
        # The offset changes in (probe, step]: find the first second of the new offset.
        low, high = probe, step if step < end else end - 1
        while high - low > 1:
            middle = (low + high) // 2
            if _offset(zone, middle) == current:
                low = middle
            else:
                high = middle
        out.append(Segment(at, high, current))
        at, probe, current = high, high, _offset(zone, high)
    out.append(Segment(at, end, current))
    return out


@dataclass(frozen=True, slots=True)
class Period:
    start: int  # epoch seconds, UTC
    end: int
    zone_name: str
    zone: tzinfo
    group: Group
    parts: tuple[Segment, ...] = ()  # the segments, worked out once

    @property
    def start_at(self) -> datetime:
        return datetime.fromtimestamp(self.start, UTC)

    @property
    def end_at(self) -> datetime:
        return datetime.fromtimestamp(self.end, UTC)

    def segments(self) -> tuple[Segment, ...]:
        return self.parts or tuple(segments(self.zone, self.start, self.end))

    def grain(self) -> int:
        """The largest rollup bucket that never straddles a group boundary: local days start on
        an hour in most zones, but on a quarter hour in India or Nepal."""
        for grain in GRAINS:
            if grain > (self.group.step if self.group.by_time else DAY):
                continue
            if self.start % grain or self.end % grain:
                continue
            if all(s.offset % grain == 0 for s in self.segments()):
                return grain
        return QUARTER

    def group_keys(self) -> list[int]:
        """Every time group of the period, in order (an empty hour, day or week is shown too)."""
        if self.group is Group.WEEKDAY_HOUR:
            return list(range(7 * 24))
        keys: set[int] = set()
        for segment in self.segments():
            # Hour, day and week numbers grow with time: a segment covers a run of them.
            first = time_key(self.group, segment.start + segment.offset)
            last = time_key(self.group, segment.end - 1 + segment.offset)
            keys.update(range(first, last + 1))
        return sorted(keys)


def time_key(group: Group, local: int) -> int:
    """The group a local time (epoch seconds shifted by the zone's offset) belongs to: the
    number of the local hour, day or week (weeks start on Monday), or weekday × 24 + hour."""
    if group is Group.HOUR:
        return local // HOUR
    day = local // DAY
    if group is Group.DAY:
        return day
    if group is Group.WEEK:
        return (day + 3) // 7  # 1970-01-01 was a Thursday: week 0 started Monday 1969-12-29
    return ((day + 3) % 7) * 24 + (local % DAY) // HOUR


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def time_label(group: Group, key: int) -> str:
    if group is Group.HOUR:
        return datetime.fromtimestamp(key * HOUR, UTC).strftime("%Y-%m-%dT%H:00")
    if group is Group.DAY:
        return (date(1970, 1, 1) + timedelta(days=key)).isoformat()
    if group is Group.WEEK:
        return (date(1969, 12, 29) + timedelta(weeks=key)).isoformat()
    return f"{WEEKDAYS[key // 24]} {key % 24:02d}:00"


def _local_midnight(day: date, zone: tzinfo) -> int:
    """The first moment of local ``day`` (a day may start at 01:00 where summer time begins
    at midnight)."""
    naive = datetime(day.year, day.month, day.day)
    moment = naive.replace(tzinfo=zone)
    # Wall-clock times in a gap do not exist: step on a quarter hour until one does.
    for _ in range(8):
        back = moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        if back == naive:
            break
        naive += timedelta(minutes=15)
        moment = naive.replace(tzinfo=zone)
    return epoch(moment.astimezone(UTC))


EARLIEST = 0
LATEST = 32503680000  # 3000-01-01T00:00Z


def parse_moment(value: str, zone: tzinfo, name: str) -> int:
    """``from``/``to``: a date (``2026-03-01``: its local midnight) or a date and time, local
    unless it says its offset."""
    text = value.strip()
    if not text:
        raise InvalidInput(f"{name} is required: a date like 2026-03-01 or a time like 2026-03-01T08:00")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if not 1970 <= day.year <= 2999:
                raise InvalidInput(f"{name} must be between 1970 and 2999")
            return _local_midnight(day, zone)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(
            f"{name} {text[:40]!r} is not a date (2026-03-01) or a date and time (2026-03-01T08:00)"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return epoch(moment)


def parse_time(value: str, zone: tzinfo, name: str) -> int:
    """:func:`parse_moment`, for times between 1970 and 2999 only."""
    try:
        at = parse_moment(value, zone, name)
    except (OverflowError, OSError) as exc:  # year 1 or 9999 shifted out of range by the zone
        raise InvalidInput(f"{name} must be between 1970 and 2999") from exc
    if not EARLIEST <= at < LATEST:
        raise InvalidInput(f"{name} must be between 1970 and 2999")
    return at


def make_period(start: int, end: int, zone_name: str, zone: tzinfo, group: Group) -> Period:
    if end <= start:
        raise InvalidInput("to must be after from")
    if start % QUARTER or end % QUARTER:
        raise InvalidInput("from and to must fall on a quarter hour (figures are kept per 15 minutes)")
    days = (end - start) / DAY
    if group is Group.HOUR and days > MAX_HOUR_DAYS:
        raise InvalidInput(
            f"group=hour covers at most {MAX_HOUR_DAYS} days; use group=day for a longer period"
        )
    if days > MAX_PERIOD_DAYS:
        raise InvalidInput("a period covers at most three years")
    return Period(start, end, zone_name, zone, group, tuple(segments(zone, start, end)))


def cover(start: int, end: int, grains: Sequence[int] = GRAINS) -> Iterator[tuple[int, int, int]]:
    """``[start, end)`` as few rollup buckets as possible: (grain, first bucket, end) ranges,
    the largest buckets in the middle and smaller ones at the edges."""
    if start >= end:
        return
    grain, smaller = grains[0], grains[1:]
    first = -(-start // grain) * grain
    last = end // grain * grain
    if not smaller:
        yield grain, start, end
        return
    if first >= last:
        yield from cover(start, end, smaller)
        return
    yield from cover(start, first, smaller)
    yield grain, first, last
    yield from cover(last, end, smaller)
