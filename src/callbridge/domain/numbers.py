"""Phone numbers as users type them and PBXs send them, turned into one comparable value.

``parse_number`` accepts national and international forms (``(415) 555-0100``, ``+1 415…``,
``00 49 30 …``, ``011 44 …``), SIP URIs (``sip:+4930123@pbx``), short extensions (``1001``)
and junk, and never raises: junk becomes a value of kind ``INVALID`` with the reason.
Two numbers are the same party exactly when their ``key`` is equal, so a national and an
international spelling match and a foreign number never matches a local one that shares
digits.

This module is the one place in ``domain/`` that uses a third-party library: ``phonenumbers``
is the data (numbering plans of every country), not infrastructure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import phonenumbers

from callbridge.domain.errors import InvalidNumber

DEFAULT_MAX_EXTENSION_DIGITS = 6
MAX_INPUT_LENGTH = 64

_SEPARATORS = re.compile(r"[\s\-./()\[\]]+")
_SIP_URI = re.compile(r"^(?:sips?|tel):([^@;>]+)", re.IGNORECASE)
_DIGITS = re.compile(r"^\d+$")


class NumberKind(StrEnum):
    E164 = "e164"
    EXTENSION = "extension"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    raw: str
    kind: NumberKind
    e164: str = ""
    extension: str = ""
    region: str = ""
    valid: bool = False
    reason: str = ""

    @property
    def key(self) -> str:
        """What to compare and index on: E.164 for external numbers, digits for extensions."""
        return self.e164 or self.extension

    @property
    def is_external(self) -> bool:
        return self.kind is NumberKind.E164

    @property
    def is_extension(self) -> bool:
        return self.kind is NumberKind.EXTENSION

    def __str__(self) -> str:
        return self.key or self.raw


def _clean(raw: str) -> str:
    text = raw.strip()
    match = _SIP_URI.match(text)
    if match:
        text = match.group(1)
    text = text.strip("<>\"' ")
    return _SEPARATORS.sub("", text)


# Sized for the numbers of the calls in flight and the directory's hot set, not for every number
# ever seen: each entry is objects the garbage collector walks on every full pass.
NUMBER_CACHE_SIZE = 8192


@lru_cache(maxsize=NUMBER_CACHE_SIZE)
def parse_number(
    raw: str,
    default_region: str = "US",
    max_extension_digits: int = DEFAULT_MAX_EXTENSION_DIGITS,
) -> PhoneNumber:
    """Parse one number; see the module docstring. Results are cached (values are immutable)."""
    if not isinstance(raw, str) or not raw.strip():
        return PhoneNumber(raw=str(raw or ""), kind=NumberKind.INVALID, reason="empty number")
    if len(raw) > MAX_INPUT_LENGTH:
        return PhoneNumber(raw=raw[:MAX_INPUT_LENGTH], kind=NumberKind.INVALID, reason="number is too long")
    text = _clean(raw)
    if _DIGITS.match(text) and len(text) <= max_extension_digits:
        return PhoneNumber(raw=raw, kind=NumberKind.EXTENSION, extension=text, valid=True)
    region = (default_region or "ZZ").upper()
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        fallback = _via_00(text, None)
        if fallback is None:
            return PhoneNumber(raw=raw, kind=NumberKind.INVALID, reason=_reason(exc))
        parsed = fallback
    parsed = _via_00(text, parsed) or parsed
    possible = phonenumbers.is_possible_number_with_reason(parsed)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        # IS_POSSIBLE_LOCAL_ONLY (a number without its area code) is ambiguous: refuse it.
        return PhoneNumber(raw=raw, kind=NumberKind.INVALID, reason="not a complete phone number")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber(
        raw=raw,
        kind=NumberKind.E164,
        e164=e164,
        region=phonenumbers.region_code_for_number(parsed) or "",
        valid=phonenumbers.is_valid_number(parsed),
    )


@lru_cache(maxsize=NUMBER_CACHE_SIZE)
def parse_key(
    raw: str,
    default_region: str = "US",
    max_extension_digits: int = DEFAULT_MAX_EXTENSION_DIGITS,
) -> tuple[NumberKind, str]:
    """``(kind, key)`` exactly as :func:`parse_number` gives them, for callers that need no
    more: it skips the validity and region look-ups, which cost three times the parse."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_INPUT_LENGTH:
        return NumberKind.INVALID, ""
    text = _clean(raw)
    if _DIGITS.match(text) and len(text) <= max_extension_digits:
        return NumberKind.EXTENSION, text
    try:
        parsed = phonenumbers.parse(text, (default_region or "ZZ").upper())
    except phonenumbers.NumberParseException:
        fallback = _via_00(text, None)
        if fallback is None:
            return NumberKind.INVALID, ""
        parsed = fallback
    parsed = _via_00(text, parsed) or parsed
    if phonenumbers.is_possible_number_with_reason(parsed) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return NumberKind.INVALID, ""
    return NumberKind.E164, phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _via_00(text: str, national: phonenumbers.PhoneNumber | None) -> phonenumbers.PhoneNumber | None:
    """``00`` is the international prefix of most of the world, also where the hub's region
    dials another one (US: ``011``): ``0049 30 1234567`` typed into a US hub is Berlin. The
    number read that way, when it starts with ``00``, the reading with the region's own rules
    (``national``; ``None`` if it failed) is not a valid number and the international one is."""
    if not text.startswith("00") or (national is not None and phonenumbers.is_valid_number(national)):
        return None
    try:
        international = phonenumbers.parse("+" + text[2:], None)
    except phonenumbers.NumberParseException:
        return None
    return international if phonenumbers.is_valid_number(international) else None


def _reason(exc: phonenumbers.NumberParseException) -> str:
    reasons = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return reasons.get(exc.error_type, "not a phone number")


def normalize(raw: str, default_region: str = "US") -> str:
    """The number's key (E.164 or extension digits); raises :class:`InvalidNumber` on junk."""
    number = parse_number(raw, default_region)
    if number.kind is NumberKind.INVALID:
        raise InvalidNumber(f"{raw!r}: {number.reason}")
    return number.key


def format_national(e164: str) -> str:
    """A friendly display form (``(415) 555-0100`` for a US number, international otherwise)."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def format_for_region(number: str, region: str) -> str:
    """A stored number as people read it: the national format when it belongs to ``region``
    (``(415) 555-0100`` in US), the international format otherwise (``+49 30 1234567``).
    Anything but an E.164 number (an extension, "anonymous") is returned as stored."""
    text = number.strip()
    if not text.startswith("+"):
        return text
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return text
    if phonenumbers.region_code_for_number(parsed) == region.upper():
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def is_known_region(region: str) -> bool:
    return region.upper() in phonenumbers.SUPPORTED_REGIONS
