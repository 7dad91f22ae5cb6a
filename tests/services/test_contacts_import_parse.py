"""CSV import parsing: column mapping, per-row reasons with line numbers, in-file dedupe."""

from __future__ import annotations

import pytest

from callbridge.domain.directory import ContactKind, PhoneKind
from callbridge.domain.errors import InvalidInput
from callbridge.services.contacts_import import (
    decode_csv,
    map_columns,
    parse_contacts_csv,
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
    assert decode_csv("\ufeffName\nZoë\n".encode()) == "Name\nZoë\n"
    assert decode_csv("Name\nZoë\n".encode("cp1252")) == "Name\nZoë\n"


def test_broken_quoting_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="line"):
        parse_contacts_csv('Name,Phone\n"Ada,+14155550100\n' + "x" * 200_000, "US")
