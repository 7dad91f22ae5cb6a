"""CSV import of contacts, the pure part: columns → fields, rows → drafts or reasons.

``parse_contacts_csv`` never stops at a bad row: it returns the good rows as
:class:`ContactDraft` and every bad one as a :class:`RowError` with its line number (the line in
the file where the row starts, the header being line 1) and a reason a person can act on.

Re-running an import must not create duplicates, so each draft carries what identifies it: its
``external_id`` when the file has one, else its numbers, else its name with its company and
e-mail. Two rows of one file that identify the same contact are reported (the later one is
skipped, naming the earlier line).

:func:`read_contacts_file` takes the bytes of a file: it finds the encoding (a byte-order mark,
UTF-16 without one, UTF-8, else a guess by ``charset-normalizer`` that the report warns about),
then parses.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import charset_normalizer

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

# The csv module refuses a field over 128 KiB by default, and that refusal ended the whole file.
# A field that long is one bad row (MAX_FIELD says why), or an unclosed quote that swallowed rows
# (reported as such): both are row problems, so the module's limit must not come first. The
# limit is process-wide; it is only ever raised here.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))

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
    encoding: str = "UTF-8"
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DecodedFile:
    text: str
    encoding: str
    """The encoding as a person names it: ``UTF-8``, ``UTF-16``, ``Shift_JIS``, …"""
    warnings: tuple[str, ...] = ()


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


_BOMS: tuple[tuple[bytes, str, str], ...] = (
    # UTF-32 first: its little-endian mark starts with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)

# Names people use for the encodings a contacts file comes in, as the import page offers them.
ENCODINGS: dict[str, str] = {
    "utf-8": "UTF-8",
    "utf-16": "UTF-16",
    "cp1252": "Windows-1252 (Western Europe)",
    "cp1250": "Windows-1250 (Central Europe)",
    "cp1251": "Windows-1251 (Cyrillic)",
    "iso8859-15": "ISO-8859-15 (Latin-9)",
    "mac-roman": "Mac OS Roman",
    "shift_jis": "Shift_JIS (Japanese)",
    "euc_jp": "EUC-JP (Japanese)",
    "gb18030": "GB18030 (Chinese, simplified)",
    "big5": "Big5 (Chinese, traditional)",
    "euc_kr": "EUC-KR (Korean)",
}


# What charset-normalizer may answer, named as people know it.
_GUESSED: dict[str, str] = {
    "cp932": "Shift_JIS",
    "shift_jis": "Shift_JIS",
    "cp949": "EUC-KR",
    "euc_kr": "EUC-KR",
    "gb18030": "GB18030",
    "gb2312": "GB18030",
    "big5": "Big5",
    "euc_jp": "EUC-JP",
}


def _label(codec: str) -> str:
    return _GUESSED.get(codec) or ENCODINGS.get(codec, codec).split(" (")[0]


def _codec(name: str) -> codecs.CodecInfo:
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError, TypeError):  # unknown, or not a name at all (a NUL in it)
        raise InvalidInput(f"unknown encoding {name!r}; for example UTF-8, UTF-16 or cp1252") from None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib, rot13: codecs, not of text
        raise InvalidInput(f"{name.strip()!r} is not a text encoding") from None
    return info


def _strict(data: bytes, codec: str, label: str) -> str:
    try:
        return data.decode(codec)
    except LookupError:  # base64, zlib, …: codecs, but not of text
        raise InvalidInput(f"{label!r} is not a text encoding") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].decode(codec, errors="replace").count("\n") + 1
        raise InvalidInput(
            f"the file is not valid {label}: line {line} has a byte ({exc.object[exc.start]:#04x}) that "
            f"{label} does not have; choose the file's encoding, or save it as UTF-8"
        ) from None
    except UnicodeError:  # a codec that decodes nothing ("undefined")
        raise InvalidInput(f"the file cannot be read as {label}; choose another encoding") from None


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 that lost its mark: mostly ASCII text has a zero in every other byte."""
    pairs = len(sample) // 2
    if pairs < 4:
        return None
    even = sum(1 for b in sample[0 : pairs * 2 : 2] if b == 0)
    odd = sum(1 for b in sample[1 : pairs * 2 : 2] if b == 0)
    if odd >= pairs * 0.4 and even <= pairs * 0.05:
        return "utf-16-le"
    if even >= pairs * 0.4 and odd <= pairs * 0.05:
        return "utf-16-be"
    return None


def decode_csv(data: bytes, encoding: str | None = None) -> DecodedFile:
    """Text of an uploaded file. ``encoding``, when given, is used as declared. Else a byte-order
    mark decides (UTF-8, UTF-16 — Excel's "Unicode text" — or UTF-32); else UTF-16 without a mark;
    else UTF-8; else ``charset-normalizer`` guesses (Windows-1252, Shift_JIS, GB18030, …) and the
    answer carries a warning naming the guess, so a person can check the names or choose."""
    if encoding and encoding.strip():
        info = _codec(encoding)
        name = "utf-8-sig" if info.name == "utf-8" else info.name
        label = _label(info.name)
        return DecodedFile(_strict(data, name, label), label)
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            return DecodedFile(_strict(data, codec, label), label)
    utf16 = _utf16_without_bom(data[:4096])
    if utf16 is not None:
        return DecodedFile(_strict(data, utf16, "UTF-16"), "UTF-16")
    try:
        return DecodedFile(data.decode("utf-8"), "UTF-8")
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        text = data.decode("cp1252", errors="replace")
        return DecodedFile(
            text,
            "Windows-1252",
            (
                "the file is in no encoding that could be recognized; it was read as Windows-1252 and "
                "characters that did not fit show as \ufffd: choose the file's encoding, or save it as UTF-8",
            ),
        )
    text = str(best)
    codec = codecs.lookup(best.encoding).name
    try:
        # Windows-1252 and -1250 read Western text alike; name the one Excel writes.
        if codec != "cp1252" and data.decode("cp1252") == text:
            codec = "cp1252"
    except UnicodeDecodeError:
        pass
    label = _label(codec)
    return DecodedFile(
        text,
        label,
        (
            f"the file is not UTF-8; it was read as {label}, a guess: check that names look right, "
            "or choose the file's encoding",
        ),
    )


def _dialect(sample: str) -> type[csv.Dialect]:
    """Excel's dialect with the separator (and quote) the sample shows. The sniffer's other
    guesses are left out: it says ``doublequote=False`` whenever the sample has no ``""``, and then
    a stray quote would end a cell silently instead of being seen (see :func:`_well_quoted`)."""
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel

    class Found(csv.excel):
        delimiter = sniffed.delimiter
        quotechar = sniffed.quotechar or '"'
        skipinitialspace = sniffed.skipinitialspace

    return Found


@dataclass(frozen=True, slots=True)
class _Record:
    line: int
    """The line where the row starts (the header is line 1)."""
    last: int
    """The line where it ends: later than ``line`` when a quoted cell holds line breaks."""
    cells: list[str]
    swallowed: bool = False
    """An unclosed quote made following rows part of this one."""


def _records(text: str) -> Iterator[_Record]:
    """The rows of the file; a row that an unclosed quote made of several is marked."""
    dialect = _dialect(text[:8192])
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(iter(lines), dialect)
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"line {line}: {exc}") from exc
        last = reader.line_num
        yield _Record(line, last, cells, last > line and not _well_quoted(lines[line - 1 : last], dialect))
        line = last + 1


def _well_quoted(lines: Sequence[str], dialect: type[csv.Dialect]) -> bool:
    """Whether a row of several lines is one honest quoted cell with line breaks (notes, say).

    An unclosed quote reads on until the next quote character, and that is almost never the end of
    a cell: it opens a later row's quoted cell (``"Initech"``: a quote followed by a letter) or
    there is none before the end of the file. Read strictly, both are errors; an honest
    multi-line cell is not."""
    try:
        rows = list(csv.reader(iter(lines), dialect, strict=True))
    except csv.Error:
        return False
    return len(rows) == 1


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
    (no header, no name column); row problems are collected in ``errors``."""
    records = _records(text)
    first = next(records, None)
    if first is None:
        raise InvalidInput("the file is empty")
    columns = map_columns(first.cells, overrides)
    parsed = ParsedImport(columns=columns)
    seen: dict[str, int] = {}
    for record in records:
        line, cells = record.line, record.cells
        if not any(c.strip() for c in cells):
            continue
        if len(parsed.rows) + len(parsed.errors) >= MAX_ROWS:
            parsed.errors.append(RowError(line, f"more than {MAX_ROWS} rows: the rest was not read"))
            break
        if record.swallowed:
            parsed.errors.append(
                RowError(
                    line,
                    f"a quote on this line is not closed properly, so lines {line}–{record.last} were "
                    "read as one row and none of them was imported: fix the quote and import the "
                    "file again",
                )
            )
            continue
        if any("\0" in c for c in cells):
            parsed.errors.append(
                RowError(line, "the row contains a NUL character (byte 0): is the file in another encoding?")
            )
            continue
        try:
            draft = draft_from_cells(cells, columns, region)
        except InvalidInput as exc:
            parsed.errors.append(RowError(line, exc.message))
            continue
        earlier = _earlier_line(draft, seen)
        if earlier is not None:
            parsed.errors.append(RowError(line, f"duplicate of line {earlier[0]} (same {earlier[1]})"))
            continue
        for key, _ in _identities(draft):
            seen.setdefault(key, line)
        for phone in draft.phones:  # a later row without an external id may name this one's number
            seen.setdefault(f"n:{phone.key}", line)
        parsed.rows.append(ImportRow(line, draft))
    return parsed


def read_contacts_file(
    data: bytes, region: str, overrides: Mapping[str, str] | None = None, encoding: str | None = None
) -> ParsedImport:
    """Decode (see :func:`decode_csv`) and parse the bytes of a contacts file."""
    decoded = decode_csv(data, encoding)
    parsed = parse_contacts_csv(decoded.text, region, overrides)
    parsed.encoding = decoded.encoding
    parsed.warnings = list(decoded.warnings)
    return parsed


def _identities(draft: ContactDraft) -> list[tuple[str, str]]:
    """What says who a row is, as (key, words for a person): its external id alone when it has
    one (colleagues may share a number), else each of its numbers, else its name with company
    and e-mail."""
    if draft.external_id:
        return [(f"x:{draft.external_id}", f"external id {draft.external_id}")]
    if draft.phones:
        return [(f"n:{p.key}", f"number {p.key}") for p in draft.phones]
    key = "\x1f".join(
        (draft.kind.value, draft.name.casefold(), draft.company.casefold(), draft.email.casefold())
    )
    return [(f"p:{key}", "name, company and e-mail")]


def _earlier_line(draft: ContactDraft, seen: Mapping[str, int]) -> tuple[int, str] | None:
    for key, words in _identities(draft):
        line = seen.get(key)
        if line is not None:
            return line, words
    return None
