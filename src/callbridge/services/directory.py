"""Directory use cases: who a number belongs to, and applying an import without duplicates.

The store answers one question fast — "which contacts have this E.164 key?" (an indexed
equality, not a ``LIKE '%digits'`` scan) — and :func:`callbridge.domain.directory.resolve`
decides between several answers. Nothing is cached here: an equality on an indexed column is
cheaper than keeping a cache right when contacts change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from callbridge.domain.directory import (
    NO_MATCH,
    Contact,
    ContactKind,
    Match,
    MatchKind,
    Phone,
    PhoneKind,
    clean_email,
    clean_name,
    clean_notes,
    clean_phones,
    clean_tags,
    phone_from_input,
    resolve,
)
from callbridge.domain.errors import InvalidInput
from callbridge.domain.numbers import NumberKind, parse_key
from callbridge.services.contacts_import import ContactDraft, ImportRow, RowError


class ContactFinder(Protocol):
    async def by_number_key(self, key: str) -> list[Contact]:
        """Every contact with a phone whose key is ``key`` (with its company's name)."""
        ...


class BulkContactFinder(ContactFinder, Protocol):
    async def by_number_keys(self, keys: Sequence[str]) -> dict[str, list[Contact]]:
        """Every key of ``keys`` with the contacts that have it (empty lists included)."""
        ...


class CachedFinder:
    """Number lookups remembered for one unit of work (a batch asks about each number once)."""

    def __init__(self, finder: BulkContactFinder) -> None:
        self._finder = finder
        self._known: dict[str, list[Contact]] = {}

    async def prefetch(self, raw_numbers: Iterable[str], region: str) -> None:
        """Look up the numbers a batch will ask about, in one statement."""
        keys = {number_key(raw, region) for raw in raw_numbers} - {""} - set(self._known)
        if keys:
            self._known.update(await self._finder.by_number_keys(sorted(keys)))

    async def by_number_key(self, key: str) -> list[Contact]:
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = await self._finder.by_number_key(key)
        return found


def number_key(raw: str, region: str) -> str:
    """The E.164 key of an external number; ``""`` for extensions and junk (they never match)."""
    kind, key = parse_key(raw, region)
    return key if kind is NumberKind.E164 else ""


async def lookup(finder: ContactFinder, raw: str, region: str) -> Match:
    key = number_key(raw, region)
    if not key:
        return NO_MATCH
    return resolve(await finder.by_number_key(key))


@dataclass(frozen=True, slots=True)
class ContactInput:
    """A validated contact as a form, the API or an import gives it."""

    kind: ContactKind
    name: str
    company_id: int | None = None
    phones: tuple[Phone, ...] = ()
    email: str = ""
    tags: tuple[str, ...] = ()
    owner_id: int | None = None
    notes: str = ""
    external_id: str = ""


def contact_input(
    *,
    kind: str,
    name: str,
    region: str,
    phones: Sequence[tuple[str, str]] = (),
    company_id: int | None = None,
    email: str = "",
    tags: Sequence[str] = (),
    owner_id: int | None = None,
    notes: str = "",
    external_id: str = "",
) -> ContactInput:
    """Validate what a person typed; raises :class:`InvalidInput` with the first problem."""
    try:
        contact_kind = ContactKind(kind)
    except ValueError as exc:
        raise InvalidInput(f"kind {kind!r}: must be person or company") from exc
    external = (external_id or "").strip()
    if len(external) > 200:
        raise InvalidInput("external id is longer than 200 characters")
    return ContactInput(
        kind=contact_kind,
        name=clean_name(name),
        company_id=company_id if contact_kind is ContactKind.PERSON else None,
        phones=clean_phones([phone_from_input(raw, region, k) for raw, k in phones if raw.strip()]),
        email=clean_email(email),
        tags=clean_tags(tags),
        owner_id=owner_id,
        notes=clean_notes(notes),
        external_id=external,
    )


def parse_phone_lines(text: str) -> list[tuple[str, str]]:
    """``mobile: +44 7700 900123`` per line (the kind is optional, ``work`` by default)."""
    out: list[tuple[str, str]] = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        head, sep, rest = line.partition(":")
        if sep and head.strip().lower() in {k.value for k in PhoneKind}:
            out.append((rest.strip(), head.strip().lower()))
        else:
            out.append((line, PhoneKind.WORK.value))
    return out


# -- past calls follow the directory ----------------------------------------------------------------


class CallRelinker(Protocol):
    async def relink_number(
        self, external_number: str, contact_id: int | None, company_id: int | None, match: MatchKind
    ) -> int: ...


async def relink_numbers(
    finder: ContactFinder, calls: CallRelinker, region: str, keys: Iterable[str]
) -> None:
    """Past calls of these numbers follow the directory: a new contact claims its earlier calls,
    a removed number lets them go (calls a person linked by hand stay as they are)."""
    for key in sorted(set(keys)):
        match = await lookup(finder, key, region)
        await calls.relink_number(
            key,
            match.contact.id if match.contact else None,
            match.company.id if match.company else None,
            match.kind,
        )


# -- import ---------------------------------------------------------------------------------------


class ImportTarget(Protocol):
    """What applying an import needs from the store (one unit of work per batch)."""

    async def id_by_external_id(self, external_id: str) -> int | None: ...

    async def id_by_number_keys(self, keys: Sequence[str]) -> int | None: ...

    async def company_id_by_name(self, name: str) -> int | None: ...

    async def person_id_by_name(self, name: str, company_id: int | None, email: str) -> int | None:
        """The person of this name (case-insensitive) at this company (``None``: none) with this
        e-mail (case-insensitive; ``""``: none)."""
        ...

    async def owner_id_by_name(self, name: str) -> int | None: ...

    async def create(self, draft: ContactDraft, company_id: int | None, owner_id: int | None) -> int: ...

    async def update(
        self, contact_id: int, draft: ContactDraft, company_id: int | None, owner_id: int | None
    ) -> None: ...


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    updated: int = 0
    companies_created: int = 0
    errors: list[RowError] = field(default_factory=list)
    # Number keys of imported contacts: their past calls are re-linked after the import.
    keys: set[str] = field(default_factory=set)
    encoding: str = "UTF-8"
    warnings: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated

    def summary(self) -> str:
        """``3 created, 1 updated, 1 company created, 2 rows not imported``."""
        parts = [f"{self.created} created", f"{self.updated} updated"]
        if self.companies_created:
            parts.append(_count(self.companies_created, "company", "companies") + " created")
        if self.errors:
            parts.append(_count(len(self.errors), "row", "rows") + " not imported")
        return ", ".join(parts)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


async def apply_import(
    target: ImportTarget,
    rows: Sequence[ImportRow],
    report: ImportReport,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Create or update one contact per row. A row is the contact with its external id if it has
    one, else the contact with any of its numbers, else (a person with neither) the person with
    its name, company and e-mail — so re-running an import changes nothing."""
    for row in rows:
        draft = row.draft
        owner_id: int | None = None
        if draft.owner:
            owner_id = await target.owner_id_by_name(draft.owner)
            if owner_id is None:
                report.errors.append(RowError(row.line, f"owner {draft.owner!r} is not a user"))
                if progress:
                    progress(1)
                continue
        company_id: int | None = None
        if draft.company and draft.kind is ContactKind.PERSON:
            company_id = await target.company_id_by_name(draft.company)
            if company_id is None:
                company_id = await target.create(
                    ContactDraft(kind=ContactKind.COMPANY, name=draft.company), None, None
                )
                report.companies_created += 1
        existing: int | None = None
        if draft.external_id:
            existing = await target.id_by_external_id(draft.external_id)
        elif draft.phones:
            existing = await target.id_by_number_keys([p.key for p in draft.phones])
        elif draft.kind is ContactKind.COMPANY:
            existing = await target.company_id_by_name(draft.name)
        else:
            existing = await target.person_id_by_name(draft.name, company_id, draft.email)
        report.keys.update(p.key for p in draft.phones)
        if existing is None:
            await target.create(draft, company_id, owner_id)
            report.created += 1
        else:
            await target.update(existing, draft, company_id, owner_id)
            report.updated += 1
        if progress:
            progress(1)
    return report
