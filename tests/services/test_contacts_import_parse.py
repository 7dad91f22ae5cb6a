"""CSV import parsing: column mapping, per-row reasons with line numbers, in-file dedupe."""

from __future__ import annotations

import codecs

import pytest

from callbridge.domain.directory import ContactKind, PhoneKind
from callbridge.domain.errors import InvalidInput
from callbridge.services.contacts_import import (
    decode_csv,
    map_columns,
    parse_contacts_csv,
    read_contacts_file,
)


def test_maps_common_header_spellings() -> None:
    columns = map_columns(["Full Name", "Company Name", "Mobile Phone", "E-mail", "CRM ID", "Whatever"])
    assert columns == {"name": 0, "company": 1, "mobile": 2, "email": 3, "external_id": 4}


def test_overrides_win_and_are_checked() -> None:
    columns = map_columns(["Nom", "Téléphone"], {"name": "Nom", "phone": "téléphone"})
    assert columns == {"name": 0, "phone": 1}
    with pytest.raises(InvalidInput, match="not in the header"):
        map_columns(["Name"], {"phone": "Tel"})
    with pytest.raises(InvalidInput, match="unknown field"):
        map_columns(["Name"], {"fax_number": "Name"})


def test_file_without_a_name_column_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no name column"):
        parse_contacts_csv("Phone,Email\n+14155550100,a@b.co\n", "US")
    with pytest.raises(InvalidInput, match="empty"):
        parse_contacts_csv("", "US")


def test_good_rows_are_imported_and_bad_rows_reported_by_line() -> None:
    text = (
        "Name,Company,Phone,Mobile,Email,Tags,Owner\n"
        "Ada Lovelace,Acme Ltd,(415) 555-0100,+44 7700 900123,ada@acme.test,VIP;key,alice\n"
        "Bob,,not a number,,,,\n"
        ",,,,,,\n"
        "Carol,,+1 212 555 0199,,carol@,,\n"
        '"Dan ""the man""",,"212-555-0142; 212-555-0143",,,,\n'
        ",Globex,020 7183 8750,,,,\n"
    )
    parsed = parse_contacts_csv(text, "US")
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (3, "phone 'not a number': not a phone number"),
        (5, "e-mail 'carol@' is not an address"),
        (7, "phone '020 7183 8750': not a complete phone number"),
    ]
    assert [r.line for r in parsed.rows] == [2, 6]
    ada = parsed.rows[0].draft
    assert ada.kind is ContactKind.PERSON
    assert ada.name == "Ada Lovelace"
    assert ada.company == "Acme Ltd"
    assert [(p.key, p.kind) for p in ada.phones] == [
        ("+14155550100", PhoneKind.WORK),
        ("+447700900123", PhoneKind.MOBILE),
    ]
    assert ada.tags == ("VIP", "key")
    assert ada.owner == "alice"
    dan = parsed.rows[1].draft
    assert dan.name == 'Dan "the man"'
    assert [p.key for p in dan.phones] == ["+12125550142", "+12125550143"]


def test_line_numbers_count_multiline_cells() -> None:
    text = 'Name,Notes,Phone\n"Ada","line one\nline two",+14155550100\nBob,,junk\n'
    parsed = parse_contacts_csv(text, "US")
    assert parsed.rows[0].draft.notes == "line one\nline two"
    assert [e.line for e in parsed.errors] == [4]


def test_company_rows_and_kind_column() -> None:
    text = "Name,Company,Kind,Phone\n,Globex,,+1 212 555 0100\nInitech,,company,\nX,,robot,\n"
    parsed = parse_contacts_csv(text, "US")
    assert [(r.draft.kind, r.draft.name, r.draft.company) for r in parsed.rows] == [
        (ContactKind.COMPANY, "Globex", ""),
        (ContactKind.COMPANY, "Initech", ""),
    ]
    assert [e.line for e in parsed.errors] == [4]
    assert "person or company" in parsed.errors[0].reason


def test_first_and_last_name_columns() -> None:
    parsed = parse_contacts_csv("First Name;Last Name;Tel\nAda;Lovelace;030 1234567\n", "DE")
    assert parsed.rows[0].draft.name == "Ada Lovelace"
    assert parsed.rows[0].draft.phones[0].key == "+49301234567"


def test_duplicates_in_one_file_are_reported_not_imported() -> None:
    text = (
        "Name,Phone,External ID\n"
        "Ada,+1 415 555 0100,\n"
        "Ada again,(415) 555-0100,\n"
        "Bob,+1 212 555 0100,crm-7\n"
        "Robert,+1 646 555 0100,crm-7\n"
        "Colleague,+1 212 555 0100,crm-8\n"
    )
    parsed = parse_contacts_csv(text, "US")
    assert [r.draft.name for r in parsed.rows] == ["Ada", "Bob", "Colleague"]
    assert [str(e) for e in parsed.errors] == [
        "line 3: duplicate of line 2 (same number +14155550100)",
        "line 5: duplicate of line 4 (same external id crm-7)",
    ]


def test_decode_handles_bom_and_excel_encoding() -> None:
    utf8 = decode_csv("\ufeffName\nZoë\n".encode())
    assert (utf8.text, utf8.encoding, utf8.warnings) == ("Name\nZoë\n", "UTF-8", ())
    western = decode_csv("Name,Company\nZoë Müller,Bäckerei Groß\n".encode("cp1252"))
    assert (western.text, western.encoding) == ("Name,Company\nZoë Müller,Bäckerei Groß\n", "Windows-1252")
    assert "not UTF-8" in western.warnings[0] and "Windows-1252" in western.warnings[0]


PEOPLE = "Name\tCompany\tPhone\r\nZoë Müller\tAcme\t+14155550100\r\n山田太郎\t\t+81 3 1234 5678\r\n"


@pytest.mark.parametrize(
    ("codec", "mark", "label"),
    [
        ("utf-16-le", codecs.BOM_UTF16_LE, "UTF-16"),  # Excel's "Unicode text", tab-separated
        ("utf-16-be", codecs.BOM_UTF16_BE, "UTF-16"),
        ("utf-16-le", b"", "UTF-16"),  # the mark lost
        ("utf-16-be", b"", "UTF-16"),
        ("utf-32-le", codecs.BOM_UTF32_LE, "UTF-32"),
        ("utf-8", codecs.BOM_UTF8, "UTF-8"),
        ("utf-8", b"", "UTF-8"),
    ],
)
def test_unicode_files_in_every_form_import(codec: str, mark: bytes, label: str) -> None:
    data = mark + PEOPLE.encode(codec)
    parsed = read_contacts_file(data, "US")
    assert (parsed.encoding, parsed.warnings, parsed.errors) == (label, [], [])
    assert [(r.draft.name, r.draft.company, r.draft.phones[0].key) for r in parsed.rows] == [
        ("Zoë Müller", "Acme", "+14155550100"),
        ("山田太郎", "", "+81312345678"),
    ]


def test_legacy_encodings_are_guessed_with_a_warning_or_taken_as_declared() -> None:
    text = "Name,Company,Phone\n山田太郎,株式会社テスト,03-1234-5678\n鈴木花子,サンプル商事,06-9876-5432\n"
    guessed = read_contacts_file(text.encode("shift_jis"), "JP")
    assert [r.draft.name for r in guessed.rows] == ["山田太郎", "鈴木花子"]
    assert guessed.rows[0].draft.company == "株式会社テスト"
    assert guessed.encoding == "Shift_JIS"
    assert len(guessed.warnings) == 1 and "Shift_JIS" in guessed.warnings[0]
    declared = read_contacts_file(
        "Name,Phone\n山田,03-1234-5678\n".encode("shift_jis"), "JP", encoding="shift_jis"
    )
    assert ([r.draft.name for r in declared.rows], declared.encoding, declared.warnings) == (
        ["山田"],
        "Shift_JIS",
        [],
    )
    chinese = read_contacts_file("Name,Company\n张伟,北京科技有限公司\n".encode("gb18030"), "CN")
    assert [r.draft.name for r in chinese.rows] == ["张伟"] and chinese.warnings


def test_a_declared_encoding_that_does_not_fit_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match=r"not valid UTF-8: line 2 has a byte \(0xfc\)"):
        read_contacts_file("Name\nJürgen\n".encode("cp1252"), "US", encoding="utf-8")
    with pytest.raises(InvalidInput, match="unknown encoding 'klingon'"):
        read_contacts_file(b"Name\nx\n", "US", encoding="klingon")
    with pytest.raises(InvalidInput, match="not a text encoding"):
        read_contacts_file(b"Name\nx\n", "US", encoding="base64")


def test_a_field_over_128_kib_is_one_bad_row() -> None:
    text = "Name,Notes,Phone\nAda," + "x" * 200_000 + ",+14155550100\nBob,,+14155550101\n"
    parsed = parse_contacts_csv(text, "US")
    assert [str(e) for e in parsed.errors] == ["line 2: notes is longer than 10000 characters"]
    assert [r.draft.name for r in parsed.rows] == ["Bob"]


def test_rows_with_nul_are_refused_one_by_one() -> None:
    parsed = read_contacts_file(b"Name,Phone\nA\x00da,+14155550100\nBob,+14155550101\n", "US")
    assert [e.line for e in parsed.errors] == [2]
    assert "NUL" in parsed.errors[0].reason
    assert [r.draft.name for r in parsed.rows] == ["Bob"]


def test_an_unclosed_quote_is_reported_with_the_rows_it_swallowed() -> None:
    # Closed by a later row's quoted cell: Ada would have got Carol's number, Bob and Carol lost.
    text = (
        "Name,Company,Phone\n"
        'Ada,"Acme,+14155550100\n'
        "Bob,Globex,+14155550101\n"
        'Carol,"Initech",+14155550102\n'
        "Dan,Umbrella,+14155550103\n"
    )
    parsed = parse_contacts_csv(text, "US")
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (
            2,
            "a quote on this line is not closed properly, so lines 2–4 were read as one row and none "
            "of them was imported: fix the quote and import the file again",
        )
    ]
    assert [(r.line, r.draft.name) for r in parsed.rows] == [(5, "Dan")]
    # Never closed: the rest of the file.
    parsed = parse_contacts_csv('Name,Phone\nAda,+14155550100\nBob,"+1 415\n' + "x" * 200_000, "US")
    assert [r.draft.name for r in parsed.rows] == ["Ada"]
    assert [e.line for e in parsed.errors] == [3] and "lines 3–4" in parsed.errors[0].reason


def test_honest_multiline_cells_are_not_taken_for_broken_quotes() -> None:
    text = (
        "Name;Notes;Phone\r\n"
        '"Ada";"first; second\r\nthird ""quoted"", fourth";+14155550100\r\n'
        "Bob;;+14155550101\r\n"
    )
    parsed = parse_contacts_csv(text, "US")
    assert parsed.errors == []
    assert [(r.line, r.draft.name) for r in parsed.rows] == [(2, "Ada"), (4, "Bob")]
    assert parsed.rows[0].draft.notes == 'first; second\r\nthird "quoted", fourth'


def test_rows_without_number_or_id_are_deduplicated_on_name_company_and_email() -> None:
    text = (
        "Name,Company,Email\n"
        "Eve,Acme,eve@acme.test\n"
        "eve,ACME,EVE@acme.test\n"
        "Eve,Globex,eve@acme.test\n"
        "Eve,Acme,\n"
    )
    parsed = parse_contacts_csv(text, "US")
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (3, "duplicate of line 2 (same name, company and e-mail)")
    ]
    assert [r.line for r in parsed.rows] == [2, 4, 5]


@pytest.mark.parametrize("declared", ["utf\x008", "undefined", "rot13", "hex", "zlib", "x" * 40])
def test_a_declared_encoding_that_reads_no_text_is_refused_with_words(declared: str) -> None:
    with pytest.raises(InvalidInput):
        decode_csv("Name,Phone\nÄda,+14155550100\n".encode(), declared)
