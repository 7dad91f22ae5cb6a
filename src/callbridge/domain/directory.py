"""Contacts, companies and the rules that say who a phone number belongs to.

A number is compared by its key (E.164, see :mod:`callbridge.domain.numbers`), so
``(415) 555-0100``, ``+1 415 555 0100`` and ``001 415 555 0100`` are the same party, and a
German ``030 1234567`` never matches a US number that happens to share digits.

When several contacts share a number, :func:`resolve` decides, explicitly:

1. one contact → that contact (and its company, when it is a person of one);
2. a person and their own company → the person (a direct line beats the switchboard);
3. several people of one company (with or without the company itself) → the company;
4. anything else (unrelated contacts) → ambiguous: every candidate is offered as a choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from callbridge.domain.errors import InvalidInput
from callbridge.domain.numbers import NumberKind, parse_number

MAX_NAME = 200
MAX_TAG = 40
MAX_TAGS = 30
MAX_PHONES = 20
MAX_NOTES = 10_000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ContactKind(StrEnum):
    PERSON = "person"
    COMPANY = "company"


class PhoneKind(StrEnum):
    WORK = "work"
    MOBILE = "mobile"
    HOME = "home"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Phone:
    """A number as entered (``raw``) and its comparable ``key`` (E.164)."""

    raw: str
    key: str
    kind: PhoneKind = PhoneKind.WORK


@dataclass(frozen=True, slots=True)
class ContactRef:
    """Enough of a contact to show and link it."""

    id: int
    name: str
    kind: ContactKind


@dataclass(frozen=True, slots=True)
class Contact:
    id: int
    kind: ContactKind
    name: str
    company_id: int | None = None
    company_name: str = ""
    phones: tuple[Phone, ...] = ()
    email: str = ""
    tags: tuple[str, ...] = ()
    owner_id: int | None = None
    notes: str = ""
    external_id: str = ""

    @property
    def ref(self) -> ContactRef:
        return ContactRef(self.id, self.name, self.kind)

    @property
    def company_ref(self) -> ContactRef | None:
        if self.kind is ContactKind.COMPANY:
            return self.ref
        if self.company_id is None:
            return None
        return ContactRef(self.company_id, self.company_name, ContactKind.COMPANY)

    @property
    def display_name(self) -> str:
        """``Ada Lovelace (Analytical Engines Ltd)`` — what a phone screen shows."""
        if self.kind is ContactKind.PERSON and self.company_name:
            return f"{self.name} ({self.company_name})"
        return self.name


class MatchKind(StrEnum):
    NONE = "none"
    CONTACT = "contact"
    COMPANY = "company"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class Match:
    """Who a number belongs to. ``contact`` is the person (or the company itself when a company's
    number matched); ``company`` is the company shown beside it; ``candidates`` are the choices
    offered when the match is ambiguous."""

    kind: MatchKind
    contact: Contact | None = None
    company: ContactRef | None = None
    candidates: tuple[Contact, ...] = field(default=())

    @property
    def found(self) -> bool:
        return self.kind in (MatchKind.CONTACT, MatchKind.COMPANY)

    @property
    def display_name(self) -> str:
        if self.kind is MatchKind.CONTACT and self.contact is not None:
            return self.contact.display_name
        if self.kind is MatchKind.COMPANY and self.company is not None:
            return self.company.name
        return ""

    @property
    def tags(self) -> tuple[str, ...]:
        return self.contact.tags if self.contact is not None and self.found else ()


NO_MATCH = Match(MatchKind.NONE)


def _family(contact: Contact) -> int | None:
    """The company a contact belongs to (a company belongs to itself)."""
    return contact.id if contact.kind is ContactKind.COMPANY else contact.company_id


def resolve(candidates: Iterable[Contact]) -> Match:
    """Apply the rules of the module docstring to every contact that has the number."""
    unique = {c.id: c for c in candidates}
    found = sorted(unique.values(), key=lambda c: c.id)
    if not found:
        return NO_MATCH
    if len(found) == 1:
        only = found[0]
        if only.kind is ContactKind.COMPANY:
            return Match(MatchKind.COMPANY, contact=only, company=only.ref)
        return Match(MatchKind.CONTACT, contact=only, company=only.company_ref)
    families = {_family(c) for c in found}
    if len(families) == 1 and None not in families:
        people = [c for c in found if c.kind is ContactKind.PERSON]
        companies = [c for c in found if c.kind is ContactKind.COMPANY]
        if len(people) == 1:
            return Match(MatchKind.CONTACT, contact=people[0], company=people[0].company_ref)
        company_ref = companies[0].ref if companies else people[0].company_ref
        return Match(
            MatchKind.COMPANY,
            contact=companies[0] if companies else None,
            company=company_ref,
            candidates=tuple(people),
        )
    return Match(MatchKind.AMBIGUOUS, candidates=tuple(found))


# -- validation of what users type --------------------------------------------------------------


def phone_from_input(raw: str, region: str, kind: PhoneKind | str = PhoneKind.WORK) -> Phone:
    """Normalize one number a user typed; raises :class:`InvalidInput` with the reason."""
    text = (raw or "").strip()
    number = parse_number(text, region)
    if number.kind is NumberKind.INVALID:
        raise InvalidInput(f"phone {text!r}: {number.reason}")
    if number.kind is NumberKind.EXTENSION:
        raise InvalidInput(f"phone {text!r}: too short for a phone number (looks like an extension)")
    try:
        phone_kind = PhoneKind(kind)
    except ValueError as exc:
        raise InvalidInput(f"phone kind {kind!r}: must be one of work, mobile, home, other") from exc
    return Phone(raw=text, key=number.key, kind=phone_kind)


def clean_name(name: str) -> str:
    text = " ".join((name or "").split())
    if not text:
        raise InvalidInput("name must not be empty")
    if len(text) > MAX_NAME:
        raise InvalidInput(f"name is longer than {MAX_NAME} characters")
    return text


def clean_email(email: str) -> str:
    text = (email or "").strip()
    if text and (len(text) > 254 or not _EMAIL.match(text)):
        raise InvalidInput(f"e-mail {text!r} is not an address")
    return text


def clean_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Trim, drop empties and duplicates (case-insensitively), keep the first spelling."""
    seen: dict[str, str] = {}
    for tag in tags:
        text = " ".join((tag or "").split())
        if not text:
            continue
        if "," in text:
            raise InvalidInput(f"tag {text!r} must not contain a comma")
        if len(text) > MAX_TAG:
            raise InvalidInput(f"tag {text!r} is longer than {MAX_TAG} characters")
        seen.setdefault(text.casefold(), text)
    if len(seen) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags")
    return tuple(seen.values())


def split_tags(text: str) -> tuple[str, ...]:
    return clean_tags(re.split(r"[,;|]", text or ""))


def clean_phones(phones: Sequence[Phone]) -> tuple[Phone, ...]:
    """Drop repeats of the same number (by key); a contact lists each number once."""
    if len(phones) > MAX_PHONES:
        raise InvalidInput(f"at most {MAX_PHONES} phone numbers")
    seen: dict[str, Phone] = {}
    for phone in phones:
        seen.setdefault(phone.key, phone)
    return tuple(seen.values())


def clean_notes(notes: str) -> str:
    text = (notes or "").strip()
    if len(text) > MAX_NOTES:
        raise InvalidInput(f"notes are longer than {MAX_NOTES} characters")
    return text


def search_key(text: str, region: str) -> str:
    """What a search box's number-looking text should match: an E.164 key when the text is a
    whole number, else ``""`` (the caller then searches by name)."""
    number = parse_number(text, region)
    return number.key if number.kind is NumberKind.E164 else ""
