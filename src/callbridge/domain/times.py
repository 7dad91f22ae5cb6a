"""Time zones: stored times are UTC; people see them in their own zone (IANA names)."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime, tzinfo

from callbridge.domain.errors import InvalidInput


@functools.cache
def time_zones() -> tuple[str, ...]:
    """Every IANA zone name this machine knows, sorted (``UTC`` included)."""
    return tuple(sorted(zoneinfo.available_timezones() | {"UTC"}))


def validate_time_zone(name: str) -> str:
    """``name`` if it is a known IANA time zone (``Europe/Berlin``); else :class:`InvalidInput`."""
    name = name.strip()
    if name.upper() == "UTC":
        return "UTC"
    if name not in time_zones():
        raise InvalidInput(f"unknown time zone {name[:64]!r}; use a name like Europe/Berlin or UTC")
    return name


@functools.cache
def zone(name: str) -> tzinfo:
    """The zone named ``name``; UTC when it is empty or unknown (a stored name the machine lost)."""
    if not name or name == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC


def in_zone(moment: datetime, name: str) -> datetime:
    """``moment`` (naive means UTC) as the wall-clock time in zone ``name``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone(name))
