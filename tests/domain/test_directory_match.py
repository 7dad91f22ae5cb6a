"""Who a number belongs to: key equality across spellings, and the explicit resolution rules."""

from __future__ import annotations

import pytest

from callbridge.domain.directory import (
    NO_MATCH,
    Contact,
    ContactKind,
    MatchKind,
    Phone,
    PhoneKind,
    clean_email,
    clean_name,
    clean_phones,
    clean_tags,
    phone_from_input,
    resolve,
    search_key,
    split_tags,
)
from callbridge.domain.errors import InvalidInput

ACME = Contact(id=1, kind=ContactKind.COMPANY, name="Acme Ltd")
ADA = Contact(id=2, kind=ContactKind.PERSON, name="Ada", company_id=1, company_name="Acme Ltd", tags=("VIP",))
BOB = Contact(id=3, kind=ContactKind.PERSON, name="Bob", company_id=1, company_name="Acme Ltd")
EVE = Contact(id=4, kind=ContactKind.PERSON, name="Eve")
GLOBEX = Contact(id=5, kind=ContactKind.COMPANY, name="Globex")
ZED = Contact(id=6, kind=ContactKind.PERSON, name="Zed", company_id=5, company_name="Globex")


def test_no_candidates_is_no_match() -> None:
    assert resolve([]) is NO_MATCH
    assert not NO_MATCH.found
    assert NO_MATCH.display_name == ""


def test_single_person_of_a_company_shows_both() -> None:
    match = resolve([ADA])
    assert match.kind is MatchKind.CONTACT
    assert match.contact == ADA
    assert match.company is not None and match.company.id == 1
    assert match.display_name == "Ada (Acme Ltd)"
    assert match.tags == ("VIP",)


def test_single_company() -> None:
    match = resolve([ACME])
    assert match.kind is MatchKind.COMPANY
    assert match.company is not None and match.company.name == "Acme Ltd"
    assert match.display_name == "Acme Ltd"


def test_person_beats_their_company() -> None:
    for order in ([ACME, ADA], [ADA, ACME]):
        match = resolve(order)
        assert match.kind is MatchKind.CONTACT
        assert match.contact == ADA


def test_several_people_of_one_company_give_the_company() -> None:
    match = resolve([ADA, BOB])
    assert match.kind is MatchKind.COMPANY
    assert match.company is not None and match.company.id == 1
    assert match.display_name == "Acme Ltd"
    assert {c.id for c in match.candidates} == {2, 3}
    with_company = resolve([BOB, ACME, ADA])
    assert with_company.kind is MatchKind.COMPANY
    assert with_company.contact == ACME


def test_unrelated_matches_are_ambiguous_and_offered() -> None:
    match = resolve([ADA, EVE])
    assert match.kind is MatchKind.AMBIGUOUS
    assert [c.id for c in match.candidates] == [2, 4]
    assert not match.found
    assert match.display_name == ""
    assert match.tags == ()
    assert resolve([ACME, GLOBEX]).kind is MatchKind.AMBIGUOUS
    assert resolve([ADA, ZED]).kind is MatchKind.AMBIGUOUS
    assert resolve([EVE, Contact(id=9, kind=ContactKind.PERSON, name="Eve 2")]).kind is MatchKind.AMBIGUOUS


def test_duplicates_of_the_same_contact_count_once() -> None:
    match = resolve([EVE, EVE])
    assert match.kind is MatchKind.CONTACT
    assert match.contact == EVE
    assert match.company is None
    assert match.display_name == "Eve"


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("(415) 555-0100", "US"),
        ("+1 415 555 0100", "US"),
        ("001 415 555 0100", "DE"),
        ("011 1 415 555 0100", "US"),
        ("1-415-555-0100", "US"),
        ("sip:+14155550100@pbx.example.com", "GB"),
    ],
)
def test_national_international_and_prefix_variants_share_a_key(raw: str, region: str) -> None:
    assert phone_from_input(raw, region).key == "+14155550100"


def test_trunk_prefix_variants_share_a_key() -> None:
    assert phone_from_input("030 1234567", "DE").key == phone_from_input("+49 30 1234567", "US").key
    assert phone_from_input("020 7183 8750", "GB").key == "+442071838750"
    assert phone_from_input("0044 20 7183 8750", "DE").key == "+442071838750"


def test_foreign_number_does_not_match_local_one_sharing_digits() -> None:
    uk = phone_from_input("020 7183 8750", "GB").key
    egypt = phone_from_input("+20 71838750", "GB").key  # what "strip 0, add +" turns it into
    assert uk != egypt
    us = phone_from_input("(301) 234-5670", "US").key
    de = phone_from_input("+49 301 234 5670", "US").key
    assert us != de
    assert us.endswith("3012345670") and de.endswith("3012345670")


def test_phone_input_refuses_junk_and_extensions_with_reason() -> None:
    with pytest.raises(InvalidInput, match="phone 'call me'"):
        phone_from_input("call me", "US")
    with pytest.raises(InvalidInput, match="extension"):
        phone_from_input("1001", "US")
    with pytest.raises(InvalidInput, match="empty"):
        phone_from_input("   ", "US")
    with pytest.raises(InvalidInput, match="kind"):
        phone_from_input("+14155550100", "US", "fax")
    assert phone_from_input("+14155550100", "US", "mobile").kind is PhoneKind.MOBILE


def test_clean_helpers() -> None:
    assert clean_name("  Ada   Lovelace ") == "Ada Lovelace"
    with pytest.raises(InvalidInput):
        clean_name("  ")
    with pytest.raises(InvalidInput):
        clean_name("x" * 201)
    assert clean_email(" ada@example.com ") == "ada@example.com"
    assert clean_email("") == ""
    with pytest.raises(InvalidInput):
        clean_email("not-an-address")
    assert clean_tags(["VIP", " vip ", "", "Key  account"]) == ("VIP", "Key account")
    with pytest.raises(InvalidInput):
        clean_tags(["a,b"])
    with pytest.raises(InvalidInput):
        clean_tags(["x" * 41])
    assert split_tags("VIP; partner|vip") == ("VIP", "partner")
    a = Phone("+1 415 555 0100", "+14155550100")
    b = Phone("(415) 555-0100", "+14155550100", PhoneKind.MOBILE)
    assert clean_phones([a, b]) == (a,)


def test_search_key() -> None:
    assert search_key("(415) 555-0100", "US") == "+14155550100"
    assert search_key("Ada", "US") == ""
    assert search_key("1001", "US") == ""
