from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.domain.errors import InvalidNumber
from callbridge.domain.numbers import NumberKind, normalize, parse_key, parse_number


@pytest.mark.parametrize(
    ("raw", "region", "key"),
    [
        ("(415) 555-0100", "US", "+14155550100"),
        ("+1 415 555 0100", "DE", "+14155550100"),
        ("1-415-555-0100", "US", "+14155550100"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("0049 30 1234567", "DE", "+49301234567"),
        ("030 1234567", "DE", "+49301234567"),
        ("+49 (0)30 1234567", "US", "+49301234567"),
        ("sip:+4930123456@pbx.example", "US", "+4930123456"),
        ("<tel:+14155550100>", "US", "+14155550100"),
        ("020 7946 0958", "GB", "+442079460958"),
    ],
)
def test_national_and_international_forms_share_one_key(raw: str, region: str, key: str) -> None:
    number = parse_number(raw, region)
    assert number.kind is NumberKind.E164
    assert number.key == key


@pytest.mark.parametrize("raw", ["1001", "200", "123456"])
def test_short_numbers_are_extensions(raw: str) -> None:
    number = parse_number(raw, "US")
    assert number.is_extension and number.key == raw and not number.is_external


@pytest.mark.parametrize(
    "raw", ["", "   ", "abc", "+", "555-0100", "+999 123", "x" * 100, "12345678901234567890"]
)
def test_junk_is_invalid_with_a_reason(raw: str) -> None:
    number = parse_number(raw, "US")
    assert number.kind is NumberKind.INVALID
    assert number.reason
    with pytest.raises(InvalidNumber):
        normalize(raw, "US")


def test_foreign_number_does_not_match_local_one_with_same_digits() -> None:
    local = parse_number("030 1234567", "DE")
    foreign = parse_number("+33 30 1234567", "DE")
    assert local.key != foreign.key


def test_region_changes_meaning_of_national_numbers() -> None:
    assert parse_number("0201234567", "DE").key != parse_number("0201234567", "GB").key


@given(st.text(max_size=80))
def test_parse_never_raises(raw: str) -> None:
    number = parse_number(raw, "US")
    assert number.kind in NumberKind
    if number.kind is NumberKind.E164:
        assert number.e164.startswith("+") and number.e164[1:].isdigit()


_NUMBERISH = st.text(alphabet="+0123456789 -()<>:;@sipte", max_size=24)


@given(st.one_of(st.text(max_size=80), _NUMBERISH), st.sampled_from(["US", "DE", "GB", "ZZ", ""]))
def test_parse_key_gives_what_parse_number_gives(raw: str, region: str) -> None:
    number = parse_number(raw, region)
    assert parse_key(raw, region) == (number.kind, number.key)


@pytest.mark.parametrize(
    ("raw", "region"),
    [("(415) 555-0100", "US"), ("030 1234567", "DE"), ("1001", "US"), ("555-0100", "US"), ("", "US")],
)
def test_parse_key_on_known_forms(raw: str, region: str) -> None:
    number = parse_number(raw, region)
    assert parse_key(raw, region) == (number.kind, number.key)


@pytest.mark.parametrize(
    ("raw", "region", "key"),
    [
        ("0049 30 1234567", "US", "+49301234567"),
        ("0044 20 7946 0958", "US", "+442079460958"),
        ("00 33 1 42 68 53 00", "CA", "+33142685300"),
        ("0049-30-1234567", "AU", "+49301234567"),  # Australia dials 0011 abroad
        ("sip:0049301234567@trunk", "US", "+49301234567"),
    ],
)
def test_00_prefix_is_international_where_the_region_dials_another(raw: str, region: str, key: str) -> None:
    number = parse_number(raw, region)
    assert number.kind is NumberKind.E164
    assert number.key == key
    assert number.valid
    assert parse_key(raw, region) == (NumberKind.E164, key)


def test_a_valid_national_reading_beats_the_00_one() -> None:
    # In Germany "00…" *is* the international prefix; the national reading is the same number.
    assert parse_number("0049 30 1234567", "DE").key == "+49301234567"
    # An invalid international reading does not replace anything: junk stays junk.
    assert parse_number("00999 1234567", "US").kind is NumberKind.INVALID


_E164_SAMPLES = [
    "+49301234567",
    "+442079460958",
    "+33142685300",
    "+390612345678",
    "+81312345678",
    "+61212345678",
    "+14155550100",
    "+5511912345678",
]


@given(
    e164=st.sampled_from(_E164_SAMPLES),
    region=st.sampled_from(["US", "CA", "AU", "JP", "BR", "DE", "GB", "FR"]),
    separator=st.sampled_from(["", " ", "-", "."]),
)
def test_00_spelling_of_any_valid_number_is_that_number(e164: str, region: str, separator: str) -> None:
    raw = "00" + separator + e164[1:]
    assert parse_number(raw, region).key == e164
    assert parse_key(raw, region) == (NumberKind.E164, e164)
