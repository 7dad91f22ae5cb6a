"""Call figures for a period, a time zone and a grouping, read from the rollups.

Who sees what: admins and managers see every call; an agent sees the figures of the calls they
took part in (user = themselves), whatever they ask for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from callbridge.domain.analytics import (
    DAY,
    ZERO,
    Counters,
    Group,
    Period,
    make_period,
    parse_group,
    parse_time,
    time_label,
)
from callbridge.domain.errors import InvalidInput
from callbridge.domain.events import Direction
from callbridge.domain.times import validate_time_zone, zone
from callbridge.domain.users import User

FIGURES = (
    "offered",
    "answered",
    "missed",
    "abandoned",
    "answer_rate",
    "avg_ring_seconds",
    "p90_ring_seconds",
    "avg_talk_seconds",
    "callbacks",
    "avg_callback_seconds",
)


class RollupReader(Protocol):
    async def groups(
        self, period: Period, *, user_id: int | None, direction: str | None, group: Group | None
    ) -> Mapping[Any, Counters]: ...

    async def user_names(self, ids: Sequence[int]) -> Mapping[int, str]: ...


@dataclass(frozen=True, slots=True)
class Query:
    period: Period
    direction: str | None  # None: every direction


@dataclass(frozen=True, slots=True)
class Report:
    query: Query
    groups: list[dict[str, Any]]
    totals: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        p = self.query.period
        return {
            "from": p.start_at.isoformat(),
            "to": p.end_at.isoformat(),
            "tz": p.zone_name,
            "group": p.group.value,
            "direction": self.query.direction or "all",
            "groups": self.groups,
            "totals": self.totals,
        }


def parse_query(
    start: str,
    end: str,
    tz: str,
    group: str,
    direction: str,
    *,
    default_zone: str,
    now: datetime | None = None,
) -> Query:
    """The period asked for. Without ``from``/``to``: the last 7 local days up to today."""
    zone_name = validate_time_zone(tz) if tz.strip() else default_zone
    where = zone(zone_name)
    chosen = parse_group(group or "day")
    if not end.strip():
        today = (now or datetime.now(UTC)).astimezone(where).date()
        end = (today + timedelta(days=1)).isoformat()
    stop = parse_time(end, where, "to")
    begin = parse_time(start, where, "from") if start.strip() else stop - 7 * DAY
    period = make_period(begin, stop, zone_name, where, chosen)
    wanted = direction.strip().lower()
    if wanted == "all" or (not wanted and chosen is Group.DIRECTION):
        return Query(period, None)
    if not wanted:
        return Query(period, Direction.INBOUND.value)
    try:
        return Query(period, Direction(wanted).value)
    except ValueError as exc:
        raise InvalidInput(
            f"unknown direction {wanted[:20]!r}; use inbound, outbound, internal or all"
        ) from exc


async def report(reader: RollupReader, query: Query, viewer: User) -> Report:
    period, group = query.period, query.period.group
    # An agent's figures are their own calls', whatever they ask for.
    mine = None if viewer.sees_all_calls else viewer.id
    found = await reader.groups(period, user_id=mine, direction=query.direction, group=group)
    if group.by_time or group in (Group.DIRECTION, Group.PBX, Group.QUEUE, Group.CALL_TYPE):
        # Every call is in exactly one of these groups: the totals are their sum.
        total = sum(found.values(), ZERO)
    else:  # a call counts for each of its users and tags: the totals count it once
        total = (await reader.groups(period, user_id=mine, direction=query.direction, group=None)).get(
            None, ZERO
        )
    rows: list[dict[str, Any]] = []
    if group.by_time:
        for key in period.group_keys():
            rows.append({"key": time_label(group, key), **found.get(key, ZERO).figures()})
    elif group is Group.USER:
        ids = sorted({int(k) for k in found} | ({viewer.id} if mine is not None else set()))
        names = await reader.user_names(ids)
        for user_id in ids:
            rows.append(
                {
                    "key": names.get(user_id, f"user {user_id}"),
                    "user_id": user_id,
                    **found.get(user_id, ZERO).figures(),
                }
            )
        rows.sort(key=lambda r: str(r["key"]).casefold())
    elif group is Group.DIRECTION:
        keys = [d.value for d in Direction] if query.direction is None else [query.direction]
        extra = sorted(k for k in found if k not in keys)
        for key in [*keys, *extra]:
            rows.append({"key": key or None, **found.get(key, ZERO).figures()})
    else:  # by name; calls without a queue or a type last, under null
        for key in sorted(found, key=lambda k: (k is None, str(k))):
            rows.append({"key": key, **found[key].figures()})
    return Report(query, rows, total.figures())


def table(rep: Report) -> tuple[list[str], list[list[Any]]]:
    """The report as a header and rows (the groups, then a ``total`` row) for CSV and XLSX."""
    header = ["key", *FIGURES]
    out = [[row["key"], *(row[f] for f in FIGURES)] for row in rep.groups]
    out.append(["total", *(rep.totals[f] for f in FIGURES)])
    return header, out
