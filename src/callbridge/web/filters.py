"""The Jinja filters every page uses for times and phone numbers: one format each, in one place.

- ``{{ call.started_at|when }}``: a stored (UTC) time in the viewer's zone, as
  ``2025-03-01 14:05:09 CET`` inside ``<time datetime="…Z">``; ``|when('time')`` shows the
  clock only, ``|when('minute')`` drops the seconds.
- ``{{ number|phone }}``: a stored E.164 number in the national format of the hub's region
  (``(415) 555-0100`` with CALLBRIDGE_DEFAULT_REGION=US) and the international format otherwise
  (``+49 30 1234567``); extensions and anything unparsable are shown as stored.
- ``{{ number|dial }}``: the same text as a click-to-call ``tel:`` link.

The viewer's zone comes from the page's context (``time_zone``, set by ``render``: the user's
own zone or the hub's ``CALLBRIDGE_TIME_ZONE``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from callbridge.domain.numbers import NumberKind, format_for_region, parse_number
from callbridge.domain.times import in_zone

FORMATS = {
    "datetime": "%Y-%m-%d %H:%M:%S",
    "minute": "%Y-%m-%d %H:%M",
    "time": "%H:%M:%S",
}


def utc_iso(moment: datetime) -> str:
    """``2025-03-01T13:05:09Z``: the machine-readable form (no microseconds)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_when(moment: datetime, time_zone: str, part: str = "datetime") -> str:
    """``moment`` in ``time_zone`` as people read it: ``2025-03-01 14:05:09 CET``."""
    local = in_zone(moment, time_zone)
    text = local.strftime(FORMATS.get(part, FORMATS["datetime"]))
    return text if part == "time" else f"{text} {local.tzname() or time_zone}"


def format_phone(number: object, region: str) -> str:
    """A stored number as shown: national format within ``region``, international otherwise."""
    return format_for_region("" if number is None else str(number), region)


def dial_link(number: object, label: object = None, region: str = "ZZ") -> Markup:
    """A click-to-call link (a ``tel:`` link, works without script)."""
    text = "" if number is None else str(number)
    if not text.strip():
        return Markup("")
    parsed = parse_number(text, "ZZ")
    target = parsed.key if parsed.kind is not NumberKind.INVALID else text.strip()
    shown = str(label) if label else format_phone(text, region)
    template = Markup('<a class="dial" href="tel:{0}" data-number="{0}" title="Call {0}">{1}</a>')
    return template.format(target, shown)


def install(env: Environment, region: str, default_zone: str) -> None:
    """Register ``when``, ``phone`` and ``dial`` on ``env`` for a hub in ``region``."""

    @pass_context
    def when(context: Context, value: Any, part: str = "datetime") -> Markup:
        if not isinstance(value, datetime):
            return Markup("—")
        zone_name = str(context.get("time_zone") or default_zone)
        return Markup('<time datetime="{0}">{1}</time>').format(
            utc_iso(value), format_when(value, zone_name, part)
        )

    def phone(value: object) -> str:
        return format_phone(value, region)

    def dial(value: object, label: object = None) -> Markup:
        return dial_link(value, label, region)

    env.filters["when"] = when
    env.filters["phone"] = phone
    env.filters["dial"] = dial
