"""CSV import of contacts, the pure part: columns → fields, rows → drafts or reasons.

``parse_contacts_csv`` never stops at a bad row: it returns the good rows as
:class:`ContactDraft` and every bad one as a :class:`RowError` with its line number (the line in
the file where the row starts, the header being line 1) and a reason a person can act on.

Re-running an import must not create duplicates, so each draft carries what identifies it: its
``external_id`` when the file has one, else its numbers. Two rows of one file that identify the
same contact are reported (the later one is skipped, naming the earlier line).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from callbridge.domain.directory import (
    ContactKind,
    Phone,
    PhoneKind,
    clean_email,
    clean_name,
    clean_notes,
    clean_phones,
    phone_from_input,
    split_tags,
)
from callbridge.domain.errors import InvalidInput

MAX_FIELD = 10_000
MAX_ROWS = 2_000_000

FIELDS = (
    "name",
    "first_name",
    "last_name",
    "kind",
    "company",
    "phone",
    "work",
    "mobile",
    "home",
    "other",
    "email",
    "tags",
    "owner",
    "notes",
    "external_id",
)

# Header spellings seen in exports of common address books and CRMs (compared lower-cased,
# with spaces, dashes and dots turned into underscores).
ALIASES: dict[str, str] = {
    "full_name": "name",
    "display_name": "name",
    "contact": "name",
    "contact_name": "name",
    "first": "first_name",
    "given_name": "first_name",
    "firstname": "first_name",
    "last": "last_name",
    "surname": "last_name",
    "family_name": "last_name",
    "lastname": "last_name",
    "type": "kind",
    "company_name": "company",
    "organization": "company",
    "organisation": "company",
    "account": "company",
    "account_name": "company",
    "phone_number": "phone",
    "telephone": "phone",
    "tel": "phone",
    "number": "phone",
    "phones": "phone",
    "work_phone": "work",
    "business_phone": "work",
    "office_phone": "work",
    "mobile_phone": "mobile",
    "cell": "mobile",
    "cell_phone": "mobile",
    "cellphone": "mobile",
    "home_phone": "home",
    "other_phone": "other",
    "fax": "other",
    "e_mail": "email",
    "email_address": "email",
    "mail": "email",
    "tag": "tags",
    "labels": "tags",
    "account_manager": "owner",
    "owner_username": "owner",
    "note": "notes",
    "comment": "notes",
    "comments": "notes",
    "id": "external_id",
    "external": "external_id",
    "externalid": "external_id",
    "crm_id": "external_id",
}

_PHONE_FIELDS: dict[str, PhoneKind] = {
    "phone": PhoneKind.WORK,
    "work": PhoneKind.WORK,
    "mobile": PhoneKind.MOBILE,
    "home": PhoneKind.HOME,
    "other": PhoneKind.OTHER,
}
_SPLIT_NUMBERS = re.compile(r"[;|\n]+")
_HEADER_JUNK = re.compile(r"[\s\-.]+")


@dataclass(frozen=True, slots=True)
class ContactDraft:
    """A contact as a file describes it, validated, not yet stored."""

    kind: ContactKind
    name: str
    company: str = ""
    phones: tuple[Phone, ...] = ()
    email: str = ""
    tags: tuple[str, ...] = ()
    owner: str = ""
    notes: str = ""
    external_id: str = ""


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    draft: ContactDraft


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(slots=True)
class ParsedImport:
    columns: dict[str, int]
    rows: list[ImportRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def _header_key(text: str) -> str:
    return _HEADER_JUNK.sub("_", text.strip().lower()).strip("_")


def map_columns(header: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, int]:
    """Field → column index. ``overrides`` maps a field to a header text (``phone="Tel. (work)"``)
    and wins over the automatic guess. Raises :class:`InvalidInput` when the file cannot work."""
    index_by_header = {_header_key(h): i for i, h in reversed(list(enumerate(header)))}
    columns: dict[str, int] = {}
    for i, text in enumerate(header):
        key = _header_key(text)
        target = key if key in FIELDS else ALIASES.get(key)
        if target is not None and target not in columns:
            columns[target] = i
    for target, text in (overrides or {}).items():
        if target not in FIELDS:
            raise InvalidInput(f"unknown field {target!r} in the column map; fields: {', '.join(FIELDS)}")
        found = index_by_header.get(_header_key(text))
        if found is None:
            raise InvalidInput(f"column {text!r} (for {target}) is not in the header")
        columns[target] = found
    if not {"name", "first_name", "last_name", "company"} & columns.keys():
        raise InvalidInput("no name column: need one of name, first_name/last_name or company")
    return columns


def decode_csv(data: bytes) -> str:
    """Text of an uploaded file: UTF-8 (with or without BOM), else Windows-1252 (Excel)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line of the row, cells); csv errors become a row of one marker cell."""
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text[:8192]))
    line = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"line {line}: {exc}") from exc
        yield line, cells
        line = reader.line_num + 1


def _cell(cells: Sequence[str], columns: Mapping[str, int], name: str) -> str:
    index = columns.get(name)
    if index is None or index >= len(cells):
        return ""
    value = cells[index].strip()
    if len(value) > MAX_FIELD:
        raise InvalidInput(f"{name} is longer than {MAX_FIELD} characters")
    return value


def draft_from_cells(cells: Sequence[str], columns: Mapping[str, int], region: str) -> ContactDraft:
    """One row → draft; raises :class:`InvalidInput` with the reason."""
    name = _cell(cells, columns, "name")
    if not name:
        name = " ".join(
            p for p in (_cell(cells, columns, "first_name"), _cell(cells, columns, "last_name")) if p
        )
    company = " ".join(_cell(cells, columns, "company").split())
    kind_text = _cell(cells, columns, "kind").lower()
    if kind_text in ("company", "organization", "organisation", "business"):
        kind = ContactKind.COMPANY
    elif kind_text in ("", "person", "individual", "contact"):
        kind = ContactKind.COMPANY if not name and company else ContactKind.PERSON
    else:
        raise InvalidInput(f"kind {kind_text!r}: must be person or company")
    if kind is ContactKind.COMPANY:
        name, company = (name or company), ""
    phones: list[Phone] = []
    for column, phone_kind in _PHONE_FIELDS.items():
        for raw in _SPLIT_NUMBERS.split(_cell(cells, columns, column)):
            if raw.strip():
                phones.append(phone_from_input(raw, region, phone_kind))
    return ContactDraft(
        kind=kind,
        name=clean_name(name),
        company=company,
        phones=clean_phones(phones),
        email=clean_email(_cell(cells, columns, "email")),
        tags=split_tags(_cell(cells, columns, "tags")),
        owner=_cell(cells, columns, "owner"),
        notes=clean_notes(_cell(cells, columns, "notes")),
        external_id=_cell(cells, columns, "external_id"),
    )


def parse_contacts_csv(text: str, region: str, overrides: Mapping[str, str] | None = None) -> ParsedImport:
    """Parse a whole file. Raises :class:`InvalidInput` only when the file as a whole is unusable
    (no header, no name column, broken quoting); row problems are collected in ``errors``."""
    rows = _rows(text)
    first = next(rows, None)
    if first is None:
        raise InvalidInput("the file is empty")
    _, header = first
    columns = map_columns(header, overrides)
    parsed = ParsedImport(columns=columns)
    seen_external: dict[str, int] = {}
    seen_numbers: dict[str, int] = {}
    for line, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        if len(parsed.rows) + len(parsed.errors) >= MAX_ROWS:
            parsed.errors.append(RowError(line, f"more than {MAX_ROWS} rows: the rest was not read"))
            break
        try:
            draft = draft_from_cells(cells, columns, region)
        except InvalidInput as exc:
            parsed.errors.append(RowError(line, exc.message))
            continue
        earlier = _earlier_line(draft, seen_external, seen_numbers)
        if earlier is not None:
            parsed.errors.append(RowError(line, f"duplicate of line {earlier[0]} (same {earlier[1]})"))
            continue
        if draft.external_id:
            seen_external[draft.external_id] = line
        for phone in draft.phones:
            seen_numbers.setdefault(phone.key, line)
        parsed.rows.append(ImportRow(line, draft))
    return parsed


def _earlier_line(
    draft: ContactDraft, seen_external: Mapping[str, int], seen_numbers: Mapping[str, int]
) -> tuple[int, str] | None:
    if draft.external_id:
        # With an external id, the id alone says who a row is (colleagues may share a number).
        line = seen_external.get(draft.external_id)
        return (line, f"external id {draft.external_id}") if line is not None else None
    for phone in draft.phones:
        line = seen_numbers.get(phone.key)
        if line is not None:
            return line, f"number {phone.key}"
    return None
